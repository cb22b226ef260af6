"""The long-number fast path of the parser gives what the pydantic model gives, or steps aside."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_replies.errors import InvalidCallback
from sms_replies.ingest import parsing
from sms_replies.ingest.parsing import LongNumberCallback, parse_callback

NOW = 1_764_000_000_000

TYPICAL = {
    "msisdn": "33612345678",
    "to": "33756781234",
    "messageId": "02000000ABCDEF",
    "text": "Oui merci",
    "type": "text",
    "keyword": "OUI",
    "message-timestamp": "2016-03-10 09:51:46",
}
PART = {**TYPICAL, "concat": "true", "concat-ref": "171", "concat-total": "2", "concat-part": "1"}

# Values near the edges of every rule: what a provider, a careless gateway or a fuzzer sends.
_NUMBERISH = st.one_of(
    st.from_regex(r"\A\+?[0-9]{0,33}\Z"),
    st.sampled_from(["33612345678\n", " 33612345678", "+", "", "٣٣٦١٢", "33612345678\x00"]),
    st.integers(-5, 10**12),
    st.none(),
)
_IDISH = st.one_of(
    st.text(max_size=110),
    st.text(alphabet="aZ09-\x00\x1f\x7f\u00e9\ud800", max_size=8),
    st.sampled_from(["x" * 100, "x" * 101, "w1"]),
    st.integers(0, 10**6),
)
_TIMESTAMPISH = st.one_of(
    st.none(),
    st.sampled_from(
        ["2016-03-10 09:51:46", "2016-03-10 09:51:46\n", "2016-02-30 09:51:46", "2016-03-10"]
    ),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\Z"),
    st.text(max_size=40),
)
_CONCAT_NUMBER = st.one_of(
    st.none(),
    st.from_regex(r"\A[0-9]{0,12}\Z"),
    st.sampled_from([" 5", "5.0", "-1", "²", "0", "256", "65535", "65536"]),
    st.integers(-2, 70000),
    st.booleans(),
)


# Well-formed values, each replaced now and then by one from the edges above.
_VALID = {
    "msisdn": st.from_regex(r"\A\+?33[67][0-9]{8}\Z"),
    "to": st.from_regex(r"\A\+?[0-9]{1,31}\Z"),
    "messageId": st.from_regex(r"\A[0-9A-Za-z-]{1,100}\Z"),
    "text": st.text(max_size=20),
    "type": st.sampled_from(["text", "unicode", "binary"]),
    "message-timestamp": st.just("2016-03-10 09:51:46"),
    "concat": st.sampled_from(["true", "false", "1", "TRUE"]),
    "concat-ref": st.integers(0, 65535).map(str),
    "concat-total": st.integers(1, 4).map(str),
    "concat-part": st.integers(1, 4).map(str),
    "keyword": st.text(max_size=5),
}
_EDGES = {
    "msisdn": _NUMBERISH,
    "to": _NUMBERISH,
    "messageId": _IDISH,
    "text": st.one_of(st.none(), st.integers(), st.sampled_from(["a\x00b", "a\ud800"])),
    "type": st.sampled_from(["stop", "text\n", "", None, 1]),
    "message-timestamp": _TIMESTAMPISH,
    "concat": st.one_of(st.none(), st.booleans(), st.text(max_size=10), st.integers()),
    "concat-ref": _CONCAT_NUMBER,
    "concat-total": _CONCAT_NUMBER,
    "concat-part": _CONCAT_NUMBER,
    "keyword": st.integers(),
}


@st.composite
def _fields(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, valid in _VALID.items():
        if name not in ("msisdn", "to", "messageId") and draw(st.booleans()):
            continue  # absent
        odd = draw(st.integers(0, 5)) == 0
        fields[name] = draw(_EDGES[name] if odd else valid)
    return fields


def _outcome(fields: dict[str, Any]) -> Any:
    try:
        return parse_callback(fields, NOW)
    except InvalidCallback as exc:
        return (exc.status, exc.problems)


@settings(max_examples=800, deadline=None)
@given(_fields())
def test_the_fast_path_agrees_with_the_model(fields: dict[str, Any]) -> None:
    fast = parsing._fast_long(fields)
    if fast is not None:
        model = LongNumberCallback.model_validate(fields)  # valid whenever the fast path says so
        assert fast._asdict() == {name: getattr(model, name) for name in fast._fields}


@settings(max_examples=300, deadline=None)
@given(_fields())
def test_parse_callback_is_the_same_with_and_without_the_fast_path(
    fields: dict[str, Any],
) -> None:
    with_fast_path = _outcome(fields)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parsing, "_fast_long", lambda fields: None)
        assert _outcome(fields) == with_fast_path


@pytest.mark.parametrize("fields", [TYPICAL, PART, {**TYPICAL, "text": "a\x00b"}])
def test_typical_callbacks_take_the_fast_path(fields: dict[str, Any]) -> None:
    assert parsing._fast_long(fields) is not None
