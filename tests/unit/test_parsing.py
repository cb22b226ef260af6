"""Validation and normalisation of callbacks (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from sms_replies.errors import InvalidCallback
from sms_replies.ingest.parsing import MAX_TEXT, parse_callback
from sms_replies.records import Concat

NOW = 1_764_000_000_000

LONG_SINGLE = {
    "msisdn": "33612345678",
    "to": "33756781234",
    "messageId": "02000000ABCDEF",
    "text": "Test",
    "type": "text",
    "keyword": "TEST",
    "message-timestamp": "2016-03-10 09:51:46",
}
LONG_PART = {
    **LONG_SINGLE,
    "concat": "true",
    "concat-ref": "171",
    "concat-total": "2",
    "concat-part": "1",
}
SHORT = {
    "type": "response",
    "phone_number": "+33612345671",
    "text": "Ma réponse",
    "message_id": "123",
}


def test_long_number_single_message_is_normalised() -> None:
    part = parse_callback(LONG_SINGLE, NOW)
    assert part.channel == "long_number"
    assert part.sender == "+33612345678"
    assert part.recipient == "+33756781234"
    assert part.provider_message_id == "02000000ABCDEF"
    assert part.text == "Test"
    assert part.concat is None
    assert part.provider_timestamp == "2016-03-10 09:51:46"
    assert part.received_at_ms == NOW


def test_long_number_part_carries_its_concat_header() -> None:
    part = parse_callback(LONG_PART, NOW)
    assert part.concat == Concat(ref=171, total=2, part=1)
    assert part.reassembly_key == "+33756781234|+33612345678|171|2"
    assert part.partition_key == b"+33756781234|+33612345678|171|2"


def test_numbers_and_strings_give_the_same_record() -> None:
    as_numbers = {
        **LONG_PART,
        "msisdn": 33612345678,
        "to": 33756781234,
        "messageId": 2000000,
        "concat-ref": 171,
        "concat-total": 2,
        "concat-part": 1,
    }
    as_strings = {**as_numbers, **{k: str(v) for k, v in as_numbers.items()}}
    assert parse_callback(as_numbers, NOW) == parse_callback(as_strings, NOW)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("33612345678", "+33612345678"),
        ("+33612345678", "+33612345678"),
        ("0612345678", "+33612345678"),
    ],
)
def test_phone_numbers_become_e164(raw: str, expected: str) -> None:
    assert parse_callback({**LONG_SINGLE, "msisdn": raw}, NOW).sender == expected


@pytest.mark.parametrize("kind", ["response", "stop"])
def test_short_number_callbacks(kind: str) -> None:
    part = parse_callback({**SHORT, "type": kind, "message_id": 123}, NOW)
    assert part.channel == "short_number"
    assert part.recipient is None
    assert part.sender == "+33612345671"
    assert part.message_type == kind
    assert part.provider_message_id == "123"


def test_token_is_not_part_of_the_callback() -> None:
    assert parse_callback({**SHORT, "token": "s3cret"}, NOW) == parse_callback(SHORT, NOW)


@pytest.mark.parametrize(
    ("fields", "field", "status"),
    [
        ({}, "callback", 400),
        ({"text": "hello"}, "callback", 400),
        ({**LONG_SINGLE, "msisdn": "33xxxxxxxxx"}, "msisdn", 400),
        ({**LONG_SINGLE, "to": "12"}, "to", 422),
        # Only the documented forms of a number (docs/callbacks-openapi.json, issue 16).
        ({**LONG_SINGLE, "msisdn": "+33 6 12 34 56 78"}, "msisdn", 400),
        ({**SHORT, "phone_number": "06.12.34.56.78"}, "phone_number", 400),
        ({k: v for k, v in LONG_SINGLE.items() if k != "messageId"}, "messageId", 400),
        ({**LONG_SINGLE, "type": "binaryish"}, "type", 400),
        ({**LONG_SINGLE, "message-timestamp": "10/03/2016"}, "message-timestamp", 400),
        ({**LONG_SINGLE, "text": "x" * (MAX_TEXT + 1)}, "text", 400),
        ({**LONG_PART, "concat-part": "3"}, "concat-part", 422),
        ({**LONG_PART, "concat-part": "0"}, "concat-part", 400),
        ({**LONG_PART, "concat-ref": "abc"}, "concat-ref", 400),
        ({**LONG_PART, "concat-ref": " 171"}, "concat-ref", 400),
        ({**LONG_PART, "concat-total": "2.0"}, "concat-total", 400),
        ({k: v for k, v in LONG_PART.items() if k != "concat-total"}, "concat", 422),
        ({**LONG_SINGLE, "concat": "true"}, "concat", 422),
        ({**SHORT, "type": "other"}, "type", 400),
        ({**SHORT, "phone_number": "not a number"}, "phone_number", 400),
        ({**SHORT, "text": {"nested": "object"}}, "text", 400),
    ],
)
def test_invalid_callbacks_name_the_problem(
    fields: dict[str, Any], field: str, status: int
) -> None:
    with pytest.raises(InvalidCallback) as caught:
        parse_callback(fields, NOW)
    assert field in caught.value.problems
    assert caught.value.status == status
