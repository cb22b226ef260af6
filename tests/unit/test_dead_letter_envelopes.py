"""Dead-letter envelopes: replayable as they were, old ones included (pure logic)."""

from __future__ import annotations

import orjson
import pytest

from sms_replies.dead_letters import NotReplayable, encode, envelope, parse
from sms_replies.records import RawGroup, RawPart, Topics
from sms_replies.sinks.testing import make_reply
from sms_replies.streams.handler import dead_letter_record

TOPICS = Topics.with_prefix("t")


def test_a_sink_envelope_replays_the_exact_record_to_its_topic_with_its_key() -> None:
    value = b'{"v": 1, "reply_id": "r-1", "received_at_ms": "x"}'
    fields = envelope(
        origin=("sink", "postgres"),
        error="not a Reply record",
        value=value,
        topic=TOPICS.replies,
        key=b"r-1",
        partition=5,
        offset=42,
    )
    letter = parse(encode(fields), TOPICS, partition=3, offset=17, timestamp_ms=0)
    assert letter.id == "3:17"
    assert letter.origin == "sink postgres"
    assert (letter.source_partition, letter.source_offset) == (5, 42)
    assert letter.replay() == (TOPICS.replies, b"r-1", value)


def test_bytes_that_are_not_utf8_replay_exactly() -> None:
    value = b"\xff\xfe not text"
    fields = envelope(origin=("sink", "duckdb"), error="e", value=value, topic=TOPICS.replies)
    letter = parse(encode(fields), TOPICS, partition=0, offset=0, timestamp_ms=0)
    assert letter.record.endswith("not text")
    assert letter.replay()[2] == value


def test_old_sink_envelopes_without_topic_replay_to_the_replies_topic() -> None:
    reply = make_reply(7)
    old = orjson.dumps({"sink": "duckdb", "error": "e", "record": reply.encode().decode()})
    letter = parse(old, TOPICS, partition=0, offset=1, timestamp_ms=0)
    assert letter.replay() == (TOPICS.replies, reply.reply_id.encode(), reply.encode())


def test_worker_envelopes_replay_to_the_raw_topic_with_the_parts_partition_key() -> None:
    part = RawPart(
        channel="long_number",
        sender="+33612345678",
        recipient="+33756781234",
        text="Oui",
        provider_message_id="m1",
        message_type="text",
        received_at_ms=1_764_000_000_000,
    )
    old = orjson.dumps({"stage": "reassembly", "error": "e", "record": part.encode().decode()})
    new = dead_letter_record("reassembly", part.encode(), "e", 1_000_000, topic=TOPICS.raw)
    for value in (old, new):
        letter = parse(value, TOPICS, partition=0, offset=1, timestamp_ms=0)
        assert letter.replay() == (TOPICS.raw, part.partition_key, part.encode())


def test_a_group_dead_lettered_whole_replays_with_its_first_parts_key() -> None:
    # A group the worker of the day could not read (a newer schema, say): once
    # replayed it must land on the partition of its parts.
    parts = [
        RawPart("long_number", f"+3361234567{n}", None, "Oui", f"m{n}", "text", 1_764_000_000_000)
        for n in range(2)
    ]
    group = RawGroup(tuple(parts)).encode()
    value = dead_letter_record("reassembly", group, "e", 1_000_000, topic=TOPICS.raw)
    letter = parse(value, TOPICS, partition=0, offset=1, timestamp_ms=0)
    assert letter.replay() == (TOPICS.raw, parts[0].partition_key, group)


def test_cut_or_unknown_records_are_listed_but_not_replayed() -> None:
    cut = encode(
        envelope(origin=("sink", "x"), error="e", value=b"y" * 2_000_000, topic=TOPICS.replies)
    )
    assert len(cut) < 1_000_000
    garbage = b"\x00 not an envelope"
    unknown_stage = orjson.dumps({"stage": "elsewhere", "error": "e", "record": "{}"})
    for value in (cut, garbage, unknown_stage):
        letter = parse(value, TOPICS, partition=0, offset=1, timestamp_ms=0)
        with pytest.raises(NotReplayable):
            letter.replay()
