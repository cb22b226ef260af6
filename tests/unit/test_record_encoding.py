"""Records on the topics: the fast encoders write exactly the versioned field-by-field object."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_replies.records import (
    SCHEMA_VERSION,
    Concat,
    RawGroup,
    RawPart,
    RecordDecodeError,
    Reply,
    ReplyGroup,
    decode_raw,
    decode_replies,
    is_reply_group,
    split_group,
    split_replies,
)
from sms_replies.streams.reassembly import KeyState, accept, expire_due


def _versioned(record: Any) -> bytes:
    # The reference: {"v": 1, **fields}, nested records as objects, in field order.
    return orjson.dumps({"v": SCHEMA_VERSION, **dataclasses.asdict(record)})


texts = st.text(max_size=200)
numbers = st.from_regex(r"\A\+33[67][0-9]{8}\Z")


@given(text=texts, sender=numbers, concat=st.booleans(), stamp=st.booleans())
def test_raw_parts_and_replies_encode_as_their_fields(
    text: str, sender: str, concat: bool, stamp: bool
) -> None:
    part = RawPart(
        channel="long_number",
        sender=sender,
        recipient=None if concat else "+33756781234",
        text=text,
        provider_message_id="0B000000001",
        message_type="text",
        received_at_ms=1_700_000_000_000,
        concat=Concat(ref=7, total=2, part=1) if concat else None,
        provider_timestamp="2026-11-25 09:51:46" if stamp else None,
    )
    assert part.encode() == _versioned(part)
    assert RawPart.decode(part.encode()) == part
    step = accept(None, part)
    if concat:  # the incomplete reply of an expired message
        assert step.pending is not None
        step = expire_due(step.pending, 1_800_000_000_000, timeout_ms=1, horizon_ms=1)
    (reply,) = step.replies
    assert isinstance(reply, Reply)
    assert reply.encode() == _versioned(reply)
    assert Reply.decode(reply.encode()) == reply
    if step.pending is not None:
        assert KeyState.decode(step.pending.encode()) == step.pending


_strings = st.text(max_size=30) | st.text(alphabet='\x00\x01\x08\t\n\x0c\r\x1f\x7f"\\/\u2028<é😀')
_ints = st.integers(-(2**63), 2**64 - 1)  # what orjson writes


@given(
    st.builds(
        Reply,
        reply_id=_strings,
        channel=st.sampled_from(["long_number", "short_number"]),
        sender=_strings,
        recipient=st.none() | _strings,
        text=_strings,
        keyword=_strings,
        is_stop=st.booleans(),
        stop_source=st.sampled_from([None, "text", "provider"]),
        parts_expected=_ints,
        parts_received=_ints,
        complete=st.booleans(),
        received_at_ms=_ints,
        provider_message_ids=st.lists(_strings, max_size=3).map(tuple),
        last_part_at_ms=st.none() | _ints,
        late=st.booleans(),
        provider_sent_at_ms=st.none() | _ints,
        campaign=st.none() | _strings,
        tag=st.none() | _strings,
    )
)
def test_a_reply_encodes_as_orjson_writes_its_fields(reply: Reply) -> None:
    """Reply.encode (msgspec) writes the bytes orjson writes, escapes and all."""
    assert reply.encode() == _versioned(reply)


@given(texts=st.lists(texts, min_size=1, max_size=5))
def test_a_group_is_its_parts_objects_under_parts(texts: list[str]) -> None:
    parts = tuple(
        RawPart("long_number", "+33612345678", None, text, f"id{n}", "text", 1_700_000_000_000)
        for n, text in enumerate(texts)
    )
    encoded = RawGroup(parts).encode()
    assert orjson.loads(encoded) == {
        "v": SCHEMA_VERSION,
        "parts": [orjson.loads(_versioned(p)) for p in parts],
    }
    assert decode_raw(encoded) == RawGroup(parts)
    assert split_group(encoded) == [p.encode() for p in parts]
    assert split_group(parts[0].encode()) is None
    assert decode_raw(parts[0].encode()) == parts[0]


def test_a_group_with_a_bad_part_does_not_decode_but_splits() -> None:
    good = RawPart("long_number", "+33612345678", None, "Oui", "id1", "text", 1)
    bad = good.encode().replace(b'"received_at_ms":1', b'"received_at_ms":-1')
    record = RawGroup.encode_parts([good.encode(), bad])
    with pytest.raises(RecordDecodeError, match="RawGroup"):
        decode_raw(record)
    assert split_group(record) == [good.encode(), bad]


def _reply(text: str, n: int = 0) -> Reply:
    step = accept(
        None,
        RawPart("long_number", "+33612345678", None, text, f"id{n}", "text", 1_700_000_000_000),
    )
    (reply,) = step.replies
    return reply


@given(texts=st.lists(texts, min_size=1, max_size=5))
def test_a_reply_group_is_its_replies_objects_under_replies(texts: list[str]) -> None:
    replies = tuple(_reply(text, n) for n, text in enumerate(texts))
    encoded = ReplyGroup(replies).encode()
    assert orjson.loads(encoded) == {
        "v": SCHEMA_VERSION,
        "replies": [orjson.loads(_versioned(r)) for r in replies],
    }
    assert decode_replies(encoded) == list(replies)
    assert split_replies(encoded) == [r.encode() for r in replies]
    assert is_reply_group(encoded)
    # A reply alone is still the plain record every reader of the topic knows.
    assert decode_replies(replies[0].encode()) == [replies[0]]
    assert split_replies(replies[0].encode()) is None
    assert not is_reply_group(replies[0].encode())


def test_a_reply_group_with_a_bad_reply_does_not_decode_but_splits() -> None:
    good = _reply("Oui").encode()
    bad = good.replace(b'"parts_expected":1', b'"parts_expected":-1')
    assert bad != good
    record = ReplyGroup.encode_replies([good, bad])
    with pytest.raises(RecordDecodeError, match="ReplyGroup"):
        decode_replies(record)
    assert split_replies(record) == [good, bad]
    with pytest.raises(RecordDecodeError, match="Reply"):
        Reply.decode(record)  # a reader of single replies refuses a group, loudly
