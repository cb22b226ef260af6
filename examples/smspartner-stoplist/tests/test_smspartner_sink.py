"""The stop-list sink in the test's loop against a real local server speaking SMS Partner's API."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sms_replies_smspartner import SmsPartnerStopListSink
from sms_replies_smspartner.testing import Fail, FakeSmsPartner, Hang

from sms_replies.preflight import check_config
from sms_replies.sinks import ConfigError, Reply, Settings, SinkWriteError
from sms_replies.sinks.testing import make_reply

API_KEY = "sp-test-key-0123456789"


def num(n: int) -> str:
    """The sender of make_reply(n)."""
    return make_reply(n).sender


def stop(number: int, sender: str | None = None, **changes: object) -> Reply:
    reply = make_reply(number, prefix="stop", text="STOP", keyword="STOP", is_stop=True)
    reply = dataclasses.replace(reply, **({"stop_source": "text"} | changes))  # type: ignore[arg-type]
    return dataclasses.replace(reply, sender=sender) if sender else reply


@pytest.fixture
def api() -> Iterator[FakeSmsPartner]:
    with FakeSmsPartner(api_key=API_KEY) as fake:
        yield fake


def sink_for(api: FakeSmsPartner, **options: float) -> SmsPartnerStopListSink:
    defaults: dict[str, float] = {"timeout": 2.0, "backoff_initial": 0.05, "backoff_max": 0.2}
    return SmsPartnerStopListSink(API_KEY, base_url=api.base_url, **(defaults | options))  # type: ignore[arg-type]


async def test_each_stop_adds_its_sender_and_nothing_else_is_sent(api: FakeSmsPartner) -> None:
    batch = [
        make_reply(1),  # "Oui merci": not an opt-out
        stop(2),
        stop(3, channel="short_number", recipient=None, stop_source="provider"),
        stop(4, sender=num(2)),  # the same number as stop(2), another reply
        make_reply(5),
    ]
    async with sink_for(api) as sink:
        await sink.write(batch)
    assert api.numbers() == {num(2), num(3)}
    assert sorted(r.phone_number or "" for r in api.answered()) == [num(2), num(3)]
    assert all(r.api_key == API_KEY for r in api.answered())
    assert sink.counts["added"] == 2


async def test_a_replayed_batch_leaves_the_list_as_it_was(api: FakeSmsPartner) -> None:
    batch = [stop(2), stop(3)]
    async with sink_for(api) as sink:
        await sink.write(batch)
        listed = dict(api.stop_list)
        await sink.write(batch)  # the runner delivers it again after a crash
        await sink.write(batch[:1])  # and the number STOPs again
    assert api.stop_list == listed
    assert [r.code for r in api.answered()] == [200, 200, 3, 3, 3]
    assert (sink.counts["added"], sink.counts["already_listed"]) == (2, 3)


@pytest.mark.parametrize("error_status", [200, 400])
async def test_a_number_the_provider_refuses_is_final_and_the_rest_goes_through(
    api: FakeSmsPartner, error_status: int
) -> None:
    api.error_status = error_status  # SMS Partner does not document the status of its errors
    api.invalid.add(num(3))
    batch = [stop(2), stop(3), stop(4)]
    async with sink_for(api) as sink:
        with pytest.raises(SinkWriteError, match=r"code 9 \(invalid phone number\)") as info:
            await sink.write(batch)
        assert not info.value.retriable  # the runner isolates stop(3) and dead-letters it
        assert num(3) not in str(info.value)
        await sink.write([batch[0], batch[2]])  # what the runner's split writes again
    assert api.numbers() == {num(2), num(4)}
    assert len([r for r in api.answered() if r.code == 9]) == 1  # refused once, never retried


async def test_an_api_that_fails_then_recovers_gets_every_number(
    api: FakeSmsPartner, caplog: pytest.LogCaptureFixture
) -> None:
    api.plan = [Fail(503), Fail(429, retry_after="1"), Hang(1.0), Fail(502)]
    batch = [stop(n) for n in range(2, 6)]
    caplog.set_level(logging.INFO)
    async with sink_for(api, timeout=0.3, concurrency=1) as sink:
        await sink.write(batch)
    assert api.numbers() == {r.sender for r in batch}
    statuses = [r.status for r in api.answered()]
    assert statuses[:4] == [503, 429, None, 502]
    assert statuses[4:] == [200] * 4
    first, second = api.answered()[1:3]  # the retry after 429 + Retry-After: 1
    assert second.at - first.at >= 0.9
    assert sink.counts["retried"] == 4
    assert "429" in caplog.text
    assert API_KEY not in caplog.text
    assert not [r.sender for r in batch if r.sender in caplog.text or r.sender[1:] in caplog.text]


async def test_down_longer_than_its_attempts_hands_back_to_the_runner(
    api: FakeSmsPartner,
) -> None:
    api.plan = [Fail(503)] * 100
    batch = [stop(2), stop(3)]
    async with sink_for(api, max_attempts=3, concurrency=1) as sink:
        with pytest.raises(SinkWriteError, match=r"HTTP 503 \(3 attempts\)") as info:
            await sink.write(batch)
        assert info.value.retriable  # the runner retries the batch, commits nothing
        api.plan.clear()
        await sink.write(batch)
    assert api.numbers() == {num(2), num(3)}


async def test_nobody_listening_is_retriable(tmp_path: Path) -> None:
    sink = SmsPartnerStopListSink(
        API_KEY, base_url="http://127.0.0.1:9/v1", max_attempts=2, backoff_initial=0.01
    )
    async with sink:
        with pytest.raises(SinkWriteError, match="ClientConnectorError") as info:
            await sink.write([stop(2)])
    assert info.value.retriable


async def test_a_wrong_api_key_is_retried_and_logged_never_dead_lettered(
    api: FakeSmsPartner, caplog: pytest.LogCaptureFixture
) -> None:
    sink = SmsPartnerStopListSink(
        "not-the-key", base_url=api.base_url, max_attempts=2, backoff_initial=0.01
    )
    async with sink:
        with pytest.raises(SinkWriteError, match="code 10") as info:
            await sink.write([stop(2)])
    assert info.value.retriable
    assert "check SMS_REPLIES_SMSPARTNER_API_KEY" in caplog.text
    assert "not-the-key" not in caplog.text
    assert not api.numbers()


async def test_pseudonymised_senders_are_skipped_counted_and_logged(
    api: FakeSmsPartner, caplog: pytest.LogCaptureFixture
) -> None:
    batch = [stop(2, sender="h:" + "ab" * 32), stop(3), stop(4, sender="h:" + "cd" * 32)]
    async with sink_for(api) as sink:
        await sink.write(batch)
    assert api.numbers() == {num(3)}
    assert sink.counts["skipped_pseudonym"] == 2
    assert "2 STOP replies from pseudonymised senders skipped" in caplog.text


async def test_a_sender_that_is_no_number_is_refused_before_any_request(
    api: FakeSmsPartner,
) -> None:
    async with sink_for(api) as sink:
        with pytest.raises(SinkWriteError, match=r"not an E\.164 number") as info:
            await sink.write([stop(2), stop(3, sender="33612000003")])
    assert not info.value.retriable
    assert api.answered() == []


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, sink_settings: Settings
) -> None:
    monkeypatch.setenv("SMS_REPLIES_SMSPARTNER_API_KEY", API_KEY)
    monkeypatch.setenv("SMS_REPLIES_SMSPARTNER_BASE_URL", "http://127.0.0.1:1/v1/")
    monkeypatch.setenv("SMS_REPLIES_SMSPARTNER_MAX_ATTEMPTS", "7")
    sink = SmsPartnerStopListSink.from_settings(sink_settings)
    assert str(sink.url) == "http://127.0.0.1:1/v1/stop-sms/add"
    assert sink.max_attempts == 7
    assert API_KEY not in repr(sink)


def test_no_api_key_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, sink_settings: Settings
) -> None:
    monkeypatch.delenv("SMS_REPLIES_SMSPARTNER_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="SMS_REPLIES_SMSPARTNER_API_KEY"):
        SmsPartnerStopListSink.from_settings(sink_settings)


def test_run_refuses_to_start_with_a_pseudonymisation_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`run`'s preflight builds every sink: the key stops it with one line, before anything runs."""
    monkeypatch.setenv("SMS_REPLIES_SMSPARTNER_API_KEY", API_KEY)
    settings = Settings.load(
        data_dir=tmp_path,
        sinks=["duckdb", "smspartner-stoplist"],
        pseudonymize_key=SecretStr("k" * 32),
    )
    with pytest.raises(ConfigError, match="cannot push pseudonymised senders"):
        check_config(settings)
    check_config(Settings.load(data_dir=tmp_path, sinks=["duckdb", "smspartner-stoplist"]))


def test_a_bare_context_reads_the_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    @dataclasses.dataclass
    class Context:  # what a SinkContext promises, nothing more
        data_dir: Path
        duckdb_path: Path
        postgres_dsn: SecretStr | None = None
        resubscribe_keywords: tuple[str, ...] = ("START",)

    monkeypatch.setenv("SMS_REPLIES_SMSPARTNER_API_KEY", API_KEY)
    monkeypatch.setenv("SMS_REPLIES_PSEUDONYMIZE_KEY", "k" * 32)
    with pytest.raises(ConfigError, match="pseudonymised"):
        SmsPartnerStopListSink.from_settings(Context(tmp_path, tmp_path / "r.duckdb"))


async def test_numbers_are_pushed_concurrently_within_the_bound(api: FakeSmsPartner) -> None:
    api.delay = 0.1
    batch = [stop(n) for n in range(2, 14)]
    async with sink_for(api, concurrency=4) as sink:
        await sink.write(batch)
    assert len(api.numbers()) == 12
    assert api.max_in_flight == 4
