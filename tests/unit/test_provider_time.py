"""The provider's ``message-timestamp``: parsed at the ingress, carried to ``provider_sent_at``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_replies.bounds import Bounds, check_part
from sms_replies.errors import InvalidCallback
from sms_replies.ingest.parsing import parse_callback
from sms_replies.records import (
    PROVIDER_TIMESTAMP_FORMAT,
    RawPart,
    RecordDecodeError,
    Reply,
    provider_time_ms,
)
from sms_replies.schema import COLUMN_NAMES, to_row
from sms_replies.streams.reassembly import KeyState, accept, expire_due

NOW = 1_764_000_000_000
LONG = {
    "msisdn": "33612345678",
    "to": "33756781234",
    "messageId": "02000000ABCDEF",
    "text": "Test",
    "message-timestamp": "2016-03-09 16:00:30",
}
MS_2016_03_09_160030 = int(datetime(2016, 3, 9, 16, 0, 30, tzinfo=UTC).timestamp()) * 1000


def test_the_timestamp_is_read_as_utc() -> None:
    assert provider_time_ms("2016-03-09 16:00:30") == MS_2016_03_09_160030
    assert provider_time_ms("1970-01-01 00:00:00") == 0


@pytest.mark.parametrize(
    "value",
    [
        "2016-03-09T16:00:30",
        "2016-03-09 16:00:30Z",
        "2016-03-09 16:00",
        "2016-3-9 16:0:30",
        " 2016-03-09 16:00:30",
        "2016-02-30 10:00:00",
        "2016-03-09 24:00:00",
        "1969-12-31 23:59:59",
        "0001-01-01 00:00:00",
        "٢٠١٦-03-09 16:00:30",  # non-ASCII digits
        "",
    ],
)
def test_malformed_timestamps_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"YYYY-MM-DD HH:MM:SS|1970") as info:
        provider_time_ms(value)
    assert value.strip() == "" or value not in str(info.value)  # never echoes the input


@pytest.mark.parametrize(
    ("value", "status"),
    # Not the documented shape: 400; that shape but no such time: 422 (issue 16).
    [("2016-02-30 10:00:00", 422), ("1969-12-31 23:59:59", 422), ("09/03/2016", 400)],
)
def test_the_ingress_refuses_naming_message_timestamp(value: str, status: int) -> None:
    with pytest.raises(InvalidCallback) as info:
        parse_callback({**LONG, "message-timestamp": value}, NOW)
    assert info.value.status == status
    assert list(info.value.problems) == ["message-timestamp"]
    assert "YYYY-MM-DD HH:MM:SS" in info.value.problems["message-timestamp"] or (
        "1970" in info.value.problems["message-timestamp"]
    )


def test_the_worker_dead_letters_a_raw_record_with_a_bad_timestamp(
    make_part: Callable[..., RawPart],
) -> None:
    good = dataclasses.replace(make_part(), provider_timestamp="2016-03-09 16:00:30")
    check_part(good, Bounds())
    with pytest.raises(RecordDecodeError, match="provider_timestamp"):
        check_part(dataclasses.replace(good, provider_timestamp="2016-13-01 00:00:00"), Bounds())


def test_a_single_reply_carries_its_provider_time() -> None:
    part = parse_callback(LONG, NOW)
    (reply,) = accept(None, part).replies
    assert reply.provider_sent_at_ms == MS_2016_03_09_160030
    row = dict(zip(COLUMN_NAMES, to_row(reply, datetime.now(UTC)), strict=True))
    assert row["provider_sent_at"] == datetime(2016, 3, 9, 16, 0, 30, tzinfo=UTC)
    assert row["received_at"] == datetime.fromtimestamp(NOW / 1000, tz=UTC)


def test_without_the_field_it_is_null() -> None:
    fields = {k: v for k, v in LONG.items() if k != "message-timestamp"}
    (reply,) = accept(None, parse_callback(fields, NOW)).replies
    assert reply.provider_sent_at_ms is None
    row = dict(zip(COLUMN_NAMES, to_row(reply, datetime.now(UTC)), strict=True))
    assert row["provider_sent_at"] is None
    short = {"type": "response", "phone_number": "+33612345671", "text": "Oui"}
    (reply,) = accept(None, parse_callback(short, NOW)).replies
    assert reply.provider_sent_at_ms is None


def _parts(times: dict[int, str | None], total: int = 3) -> list[RawPart]:
    """Parts of one long reply, part n with the provider time times[n] (None: field absent)."""
    parts = []
    for n, stamp in times.items():
        fields = {k: v for k, v in LONG.items() if k != "message-timestamp"}
        fields.update(
            {"messageId": f"id-{n}", "concat": "true", "concat-ref": "9"},
            **{"concat-total": str(total), "concat-part": str(n)},
        )
        if stamp is not None:
            fields["message-timestamp"] = stamp
        parts.append(parse_callback(fields, NOW + 5000 - n))  # received in reverse order
    return parts


def _feed(parts: list[RawPart]) -> list[Reply]:
    pending: KeyState | None = None
    replies: list[Reply] = []
    for part in parts:
        step = accept(pending, part)
        pending = step.pending
        replies.extend(step.replies)
    return replies


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_a_long_reply_takes_the_earliest_part_time_in_any_order(order: tuple[int, ...]) -> None:
    parts = _parts({1: "2016-03-09 16:00:30", 2: "2016-03-09 16:00:31", 3: "2016-03-09 16:00:32"})
    (reply,) = _feed([parts[i] for i in order])
    assert reply.complete
    assert reply.provider_sent_at_ms == MS_2016_03_09_160030


def test_an_incomplete_reply_without_part_one_takes_the_earliest_it_has() -> None:
    parts = _parts({2: "2016-03-09 16:00:31", 3: None})
    pending: KeyState | None = None
    for part in parts:
        pending = accept(pending, part).pending
    assert pending is not None
    step = expire_due(pending, NOW + 10**9, timeout_ms=1000, horizon_ms=10**10)
    (reply,) = step.replies
    assert not reply.complete
    assert reply.provider_sent_at_ms == MS_2016_03_09_160030 + 1000


def test_a_retried_part_keeps_the_provider_time() -> None:
    first = parse_callback(LONG, NOW)
    retried = parse_callback(LONG, NOW + 60_000)  # the same callback, a minute later
    (a,) = accept(None, first).replies
    (b,) = accept(None, retried).replies
    assert a.reply_id == b.reply_id
    assert a.received_at_ms != b.received_at_ms
    assert a.provider_sent_at_ms == b.provider_sent_at_ms == MS_2016_03_09_160030


def test_the_state_round_trip_keeps_the_provider_time() -> None:
    parts = _parts({1: "2016-03-09 16:00:30", 2: None}, total=2)
    held = accept(None, parts[0]).pending
    assert held is not None
    (reply,) = accept(KeyState.decode(held.encode()), parts[1]).replies
    assert reply.provider_sent_at_ms == MS_2016_03_09_160030
    assert Reply.decode(reply.encode()) == reply


def test_a_reply_record_from_before_the_field_still_decodes() -> None:
    (reply,) = accept(None, parse_callback(LONG, NOW)).replies
    old = orjson.loads(reply.encode())
    del old["provider_sent_at_ms"]
    decoded = Reply.decode(orjson.dumps(old))
    assert decoded.provider_sent_at_ms is None
    assert decoded == dataclasses.replace(reply, provider_sent_at_ms=None)


@settings(max_examples=500, deadline=None)
@given(st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\Z"))
def test_the_fast_parse_agrees_with_strptime(value: str) -> None:
    # provider_time_ms reads the fields by position (the worker reads a timestamp
    # twice a part); strptime is the reference for what is a real time.
    try:
        expected = datetime.strptime(value, PROVIDER_TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        with pytest.raises(ValueError, match="YYYY-MM-DD HH:MM:SS"):
            provider_time_ms(value)
        return
    if expected.year < 1970:
        with pytest.raises(ValueError, match="1970"):
            provider_time_ms(value)
    else:
        assert provider_time_ms(value) == int(expected.timestamp()) * 1000
