"""Bounds that fit real SMS: the ingress refuses beyond them, and a state always fits a record."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tests.unit.test_ingress_security import MemoryPublisher, make_settings

from sms_replies.bounds import (
    MAX_ID,
    MAX_PHONE,
    MAX_SENDER,
    MAX_TIMESTAMP,
    Bounds,
    check_decoded_part,
    check_part,
    worst_state_bytes,
)
from sms_replies.errors import InvalidCallback
from sms_replies.ingest.app import CALLBACK_PATH, create_app
from sms_replies.ingest.parsing import parse_callback
from sms_replies.records import Concat, RawPart, RecordDecodeError
from sms_replies.settings import Settings
from sms_replies.streams.reassembly import Closed, KeyState

NOW = 1_764_000_000_000
HOSTILE_QUERY = (
    "msisdn=33612345678&to=33756781234&concat=true&concat-ref=1&concat-total=255"
    "&concat-part={n}&messageId=h{n}&text=" + "%01" * 2000
)
PART = {
    "msisdn": "33612345678",
    "to": "33756781234",
    "messageId": "m-1",
    "concat": "true",
    "concat-ref": "7",
    "concat-total": "3",
    "concat-part": "1",
}
SINGLE = {"msisdn": "33612345678", "to": "33756781234", "messageId": "m-1"}


def test_the_reproduced_hostile_part_is_refused() -> None:
    """Review 2026-12: 2,000 control characters in each of 255 parts took the worker down."""
    hostile = {**PART, "concat-total": "255", "concat-part": "2", "text": "\x01" * 2000}
    with pytest.raises(InvalidCallback) as caught:
        parse_callback(hostile, NOW)
    assert caught.value.status == 400
    assert set(caught.value.problems) == {"concat-total"}
    with pytest.raises(InvalidCallback) as caught:
        parse_callback({**hostile, "concat-total": "3"}, NOW)
    assert set(caught.value.problems) == {"text"}


@pytest.mark.parametrize(
    ("fields", "accepted"),
    [
        ({**PART, "text": "é" * 320}, True),  # 67 UCS-2 or 153 GSM-7 characters, with margin
        ({**PART, "text": "é" * 321}, False),
        ({**SINGLE, "text": "x" * 2000}, True),  # a long SMS the provider sent whole
        ({**SINGLE, "text": "x" * 2001}, False),
        ({**PART, "concat-total": "64", "concat-part": "64"}, True),
        ({**PART, "concat-total": "65", "concat-part": "1"}, False),
    ],
)
def test_default_bounds(fields: dict[str, Any], accepted: bool) -> None:
    if accepted:
        assert parse_callback(fields, NOW).provider_message_id == "m-1"
    else:
        with pytest.raises(InvalidCallback):
            parse_callback(fields, NOW)


def test_the_bounds_are_settings() -> None:
    settings = Settings.load(max_part_text=10, max_single_text=20, max_parts=2)
    bounds = Bounds.of(settings)
    assert parse_callback({**PART, "concat-total": "2", "text": "x" * 10}, NOW, bounds).text
    with pytest.raises(InvalidCallback):
        parse_callback({**PART, "concat-total": "2", "text": "x" * 11}, NOW, bounds)
    with pytest.raises(InvalidCallback):
        parse_callback({**PART, "concat-total": "3"}, NOW, bounds)
    with pytest.raises(InvalidCallback):
        parse_callback({**SINGLE, "text": "x" * 21}, NOW, bounds)


def test_settings_whose_worst_state_exceeds_a_record_are_refused() -> None:
    with pytest.raises(ValidationError, match="max_record_bytes"):
        Settings.load(max_parts=255, max_part_text=2000)
    assert Settings.load(max_parts=255, max_part_text=2000, max_record_bytes=8_000_000)


def _worst_part(number: int, total: int, bounds: Bounds) -> RawPart:
    """A part with every field at its longest, in characters that escape to 6 bytes."""
    return RawPart(
        channel="short_number",
        sender="\x01" * MAX_SENDER,
        recipient="\x01" * MAX_PHONE,
        text="\x01" * bounds.max_part_text,
        provider_message_id=f"{number:03d}" + "\x01" * (MAX_ID - 3),
        message_type="\x01" * 16,
        received_at_ms=2**63 - 1,
        concat=Concat(ref=65535, total=total, part=number),
        provider_timestamp="\x01" * MAX_TIMESTAMP,
    )


@pytest.mark.parametrize("bounds", [Bounds(), Bounds(max_parts=150, max_part_text=160)])
def test_the_largest_state_the_bounds_allow_fits_in_one_record(bounds: Bounds) -> None:
    n = bounds.max_parts
    closed = Closed(
        total=n,
        message=tuple(_worst_part(i, n, bounds) for i in range(1, n + 1)),
        expired=False,
        at_ms=2**63 - 1,
        closed_by="\x01" * MAX_ID,
    )
    in_progress = {i: _worst_part(i, n, bounds) for i in range(1, n)}
    state = KeyState(total=n, parts=in_progress, closed=closed).encode()
    assert len(state) <= worst_state_bytes(bounds) <= bounds.max_value_bytes
    assert len(closed.reply().encode()) <= len(state)


async def test_the_reproduced_requests_are_answered_400_and_nothing_is_published() -> None:
    """The review's 95 requests: text=%01 x 2000, 255 parts, one key."""
    publisher = MemoryPublisher()
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(create_app(make_settings(), publisher))
    )
    await client.start_server()
    try:
        for n in range(1, 96):
            response = await client.get(f"{CALLBACK_PATH}?{HOSTILE_QUERY.format(n=n)}")
            assert response.status == 400
            assert "concat-total" in (await response.json())["problems"]
    finally:
        await client.close()
    assert publisher.parts == []


def _around(limit: int) -> st.SearchStrategy[str]:
    """Strings just within and just beyond ``limit`` characters, or any short text."""
    return st.integers(max(0, limit - 1), limit + 1).map(lambda n: "x" * n) | st.text(max_size=8)


_VALID_PART = {
    "v": 1,
    "channel": "long_number",
    "sender": "+33612345678",
    "recipient": "+33756781234",
    "text": "Oui",
    "provider_message_id": "m-1",
    "message_type": "text",
    "received_at_ms": NOW,
    "concat": {"ref": 7, "total": 3, "part": 1},
    "provider_timestamp": "2026-11-25 09:51:46",
    "campaign": "spring-A",
    "tag": None,
}
#: Values at and beyond each field's bounds (and of the wrong type: msgspec's to refuse).
_EDGES: dict[str, st.SearchStrategy[Any]] = {
    "channel": st.sampled_from(["short_number", "other", 7]),
    "sender": _around(MAX_SENDER),
    "recipient": st.none() | _around(MAX_PHONE),
    "text": st.sampled_from([0, 4, 5, 6, 319, 320, 321, 2000, 2001]).map(lambda n: "é" * n),
    "provider_message_id": _around(MAX_ID),
    "message_type": _around(16),
    "received_at_ms": st.sampled_from([0, -1, 253_402_300_799_999, 2**63, True]),
    "concat": st.none()
    | st.fixed_dictionaries(
        {
            "ref": st.sampled_from([0, 7, 65535, 65536, -1, True]),
            "total": st.sampled_from([0, 1, 3, 4, 64, 65]),
            "part": st.sampled_from([0, 1, 3, 4]),
        }
    ),
    "provider_timestamp": st.none()
    | st.sampled_from(["2016-02-30 00:00:00", "1969-12-31 23:59:59", "2026-11-25 9:51:46"])
    | _around(MAX_TIMESTAMP),
    "campaign": st.none() | st.sampled_from(["", "a\tb", "é", "~" * 64, "x" * 65]),
    "tag": st.sampled_from(["", "x", "\x7f", "x" * 65]),
}
_one_edge = st.one_of([st.builds(lambda v, k=k: {k: v}, edge) for k, edge in _EDGES.items()])
_decodable = st.builds(
    lambda edges: {**_VALID_PART, **edges},
    _one_edge | st.fixed_dictionaries({}, optional=_EDGES),
)


@settings(max_examples=500)
@given(_decodable, st.sampled_from([Bounds(), Bounds(max_part_text=5, max_parts=3)]))
def test_a_decoded_part_is_checked_as_check_part_checks_it(
    fields: dict[str, Any], bounds: Bounds
) -> None:
    """check_decoded_part (the worker's, after msgspec) refuses what check_part refuses,
    with its error; it accepts what check_part accepts."""
    try:
        part = RawPart.decode(orjson.dumps(fields))
    except RecordDecodeError:
        return  # msgspec refused it: the worker never checks it
    assert _error_of(check_decoded_part, part, bounds) == _error_of(check_part, part, bounds)


def _error_of(check: Any, part: RawPart, bounds: Bounds) -> str | None:
    try:
        check(part, bounds)
    except RecordDecodeError as exc:
        return str(exc)
    return None
