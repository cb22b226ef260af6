"""The webhook sink's wire format: body, signature, idempotency key, status policy."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from sms_replies.errors import ConfigError, SinkWriteError
from sms_replies.preflight import check_config
from sms_replies.schema import COLUMN_NAMES, ROW_ERRORS
from sms_replies.settings import Settings
from sms_replies.sinks import registry
from sms_replies.sinks.testing import awkward_replies, make_replies
from sms_replies.sinks.webhook import WebhookSink
from sms_replies.sinks.webhook_protocol import (
    encode_body,
    idempotency_key,
    is_retriable_status,
    retry_after_seconds,
    sign,
    signature_is_valid,
)

SECRET = b"0123456789abcdef-webhook"
SENT_AT = datetime(2026, 12, 1, 22, 30, 5, 123456, tzinfo=UTC)


def test_body_holds_every_column_of_every_reply_in_order() -> None:
    batch = awkward_replies()
    body = orjson.loads(encode_body(batch, SENT_AT))
    assert list(body) == ["replies"]
    assert [item["reply_id"] for item in body["replies"]] == [r.reply_id for r in batch]
    for item, reply in zip(body["replies"], batch, strict=True):
        assert list(item) == list(COLUMN_NAMES)
        assert item["text"] == reply.text
        assert item["sender"] == reply.sender
        assert item["provider_message_ids"] == list(reply.provider_message_ids)
        assert item["ingested_at"] == "2026-12-01T22:30:05.123456Z"


def test_timestamps_are_rfc3339_utc() -> None:
    (reply,) = make_replies(1)  # received_at 2023-11-14T22:13:20.123Z
    item = orjson.loads(encode_body([reply], SENT_AT))["replies"][0]
    assert item["received_at"] == "2023-11-14T22:13:20.123000Z"
    assert datetime.fromisoformat(item["received_at"]).timestamp() * 1000 == reply.received_at_ms


def test_mistyped_reply_raises_a_row_error() -> None:
    (reply,) = make_replies(1)
    bad = dataclasses.replace(reply, text="\ud800 lone surrogate")
    with pytest.raises(ROW_ERRORS):
        encode_body([bad], SENT_AT)


def test_signature_is_hex_hmac_sha256_of_the_exact_body() -> None:
    body = encode_body(make_replies(3), SENT_AT)
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert sign(body, SECRET) == expected
    assert signature_is_valid(body, expected, SECRET)
    assert not signature_is_valid(body + b" ", expected, SECRET)
    assert not signature_is_valid(body, expected, b"another secret of 16+")
    assert not signature_is_valid(body, None, SECRET)


def test_idempotency_key_depends_on_the_set_of_reply_ids_only() -> None:
    ids = [r.reply_id for r in make_replies(5)]
    key = idempotency_key(ids)
    assert key == idempotency_key(list(reversed(ids)))
    assert key == idempotency_key([*ids, ids[0]])
    assert key != idempotency_key(ids[:4])
    assert key == hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


@pytest.mark.parametrize(
    ("status", "retriable"),
    [
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (408, True),
        (429, True),
        (401, True),
        (404, True),
        (302, True),
        (400, False),
        (413, False),
        (422, False),
    ],
)
def test_status_policy(status: int, retriable: bool) -> None:
    assert is_retriable_status(status) is retriable


def test_retry_after_seconds_and_dates() -> None:
    now = datetime(2026, 12, 1, 22, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("Tue, 01 Dec 2026 22:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Tue, 01 Dec 2026 21:00:00 GMT", now) == 0.0
    assert retry_after_seconds(None, now) is None
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds("-3", now) is None


def test_settings_need_url_and_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path)
    monkeypatch.delenv("SMS_REPLIES_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("SMS_REPLIES_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="SMS_REPLIES_WEBHOOK_URL"):
        WebhookSink.from_settings(settings)
    monkeypatch.setenv("SMS_REPLIES_WEBHOOK_URL", "https://hooks.example/in?token=t0ps3cret")
    with pytest.raises(ConfigError, match="SMS_REPLIES_WEBHOOK_SECRET"):
        WebhookSink.from_settings(settings)
    monkeypatch.setenv("SMS_REPLIES_WEBHOOK_SECRET", SECRET.decode())
    sink = WebhookSink.from_settings(settings)
    assert sink.origin == "https://hooks.example"
    assert "t0ps3cret" not in repr(sink)


def test_settings_refuse_a_relative_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMS_REPLIES_WEBHOOK_URL", "hooks.example/in")
    monkeypatch.setenv("SMS_REPLIES_WEBHOOK_SECRET", SECRET.decode())
    with pytest.raises(ValueError, match="absolute http"):
        WebhookSink.from_settings(Settings.load(data_dir=tmp_path))


async def test_mistyped_reply_is_refused_for_good_before_any_request() -> None:
    (reply,) = make_replies(1)
    bad = dataclasses.replace(reply, received_at_ms="soon")  # type: ignore[arg-type]
    sink = WebhookSink("http://127.0.0.1:9/never-called", SECRET)
    with pytest.raises(SinkWriteError) as info:
        await sink.write([bad])
    assert not info.value.retriable
    await sink.close()


def test_built_in_entry_points_match_pyproject() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["sms_replies.sinks"] == registry.BUILT_IN
    assert registry.load_sink("webhook") is WebhookSink


def test_preflight_refuses_a_webhook_without_url_or_with_a_short_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = Settings.load(data_dir=tmp_path, sinks=["duckdb", "webhook"])
    monkeypatch.delenv("SMS_REPLIES_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("SMS_REPLIES_WEBHOOK_SECRET", SECRET.decode())
    with pytest.raises(ConfigError, match="SMS_REPLIES_WEBHOOK_URL"):
        check_config(settings)
    monkeypatch.setenv("SMS_REPLIES_WEBHOOK_URL", "https://hooks.example/in")
    monkeypatch.setenv("SMS_REPLIES_WEBHOOK_SECRET", "short-s3cret")
    with pytest.raises(ConfigError, match=r"sink 'webhook': secret: .*at least 16") as info:
        check_config(settings)
    assert "short-s3cret" not in str(info.value)
