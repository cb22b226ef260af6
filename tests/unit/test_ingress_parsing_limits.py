"""Every callback field is bounded, and refusals never echo the submitted value."""

from __future__ import annotations

from typing import Any

import pytest

from sms_replies.errors import InvalidCallback
from sms_replies.ingest.parsing import MAX_ID, MAX_PHONE, MAX_TEXT, parse_callback

NOW = 1_764_000_000_000
LONG = {"msisdn": "33612345678", "to": "33756781234", "messageId": "m-1", "text": "Oui"}
SHORT = {"type": "response", "phone_number": "+33612345671", "text": "Oui", "message_id": "1"}
PROBE = "PROBE-7f3a"


@pytest.mark.parametrize(
    ("base", "field", "value"),
    [
        (LONG, "msisdn", "3" * (MAX_PHONE + 1)),
        (LONG, "to", "3" * (MAX_PHONE + 1)),
        (LONG, "messageId", "m" * (MAX_ID + 1)),
        (LONG, "messageId", ""),
        (LONG, "messageId", "m\x00"),
        (LONG, "messageId", "m\r\nX: y"),
        (LONG, "text", "t" * (MAX_TEXT + 1)),
        (LONG, "type", "html"),
        (LONG, "message-timestamp", "2024-03-10T09:51:46" + "0" * 20),
        (LONG, "concat", "true" * 3),
        (LONG, "concat-ref", "65536"),
        (LONG, "concat-ref", "-1"),
        (LONG, "concat-total", "0"),
        (LONG, "concat-total", "256"),
        (LONG, "concat-part", "0"),
        (LONG, "concat-part", str(2**70)),
        (SHORT, "phone_number", "+" + "3" * MAX_PHONE),
        (SHORT, "message_id", "x" * (MAX_ID + 1)),
        (SHORT, "message_id", "a\x7f"),
        (SHORT, "text", "t" * (MAX_TEXT + 1)),
    ],
)
def test_each_field_has_a_bound(base: dict[str, Any], field: str, value: str) -> None:
    fields = {**base, field: value}
    if field.startswith("concat-"):
        fields = {**fields, **{k: fields.get(k, "1") for k in ("concat-ref", "concat-total")}}
        fields.setdefault("concat-part", "1")
    with pytest.raises(InvalidCallback) as caught:
        parse_callback(fields, NOW)
    assert caught.value.status == 400
    assert caught.value.problems


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message-timestamp", f"{PROBE}"),
        ("type", PROBE),
        ("msisdn", PROBE),
        ("concat-ref", PROBE),
    ],
)
def test_problems_do_not_echo_the_input(field: str, value: str) -> None:
    with pytest.raises(InvalidCallback) as caught:
        parse_callback({**LONG, field: value}, NOW)
    assert PROBE not in str(caught.value.problems)


def test_concat_part_beyond_total_is_refused() -> None:
    fields = {**LONG, "concat": "true", "concat-ref": "1", "concat-total": "2", "concat-part": "3"}
    with pytest.raises(InvalidCallback) as caught:
        parse_callback(fields, NOW)
    assert "concat-part" in caught.value.problems


def test_text_keeps_control_characters_but_nul_is_the_gsm_at_sign() -> None:
    assert parse_callback({**LONG, "text": "a\tb\x1bc"}, NOW).text == "a\tb\x1bc"
    assert parse_callback({**LONG, "text": "rdv a\x00 10h"}, NOW).text == "rdv a@ 10h"
