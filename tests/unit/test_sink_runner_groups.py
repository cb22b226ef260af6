"""The sinks' runner on records holding several replies (ReplyGroup): no broker, no store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord
from tests.analytics_sample import SAMPLE_REPLIES

from sms_replies.errors import SinkWriteError
from sms_replies.records import Reply, ReplyGroup, Topics
from sms_replies.sinks.base import Sink
from sms_replies.sinks.runner import SinkRunner


class Recording(Sink):
    """Writes each batch to a list; refuses for good any batch holding ``poison``."""

    name = "recording"

    def __init__(self, poison: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.poison = poison

    @classmethod
    def from_settings(cls, settings: Any) -> Recording:
        return cls()

    async def write(self, batch: Sequence[Reply]) -> None:
        ids = [r.reply_id for r in batch]
        if self.poison in ids:
            raise SinkWriteError("the store refuses this reply", retriable=False)
        self.batches.append(ids)


class DeadLetters:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(self, topic: str, value: bytes) -> None:
        self.sent.append(orjson.loads(value))


@contextlib.asynccontextmanager
async def _runner(
    sink: Recording, dead: DeadLetters, batch_size: int
) -> AsyncIterator[tuple[SinkRunner, list[Any]]]:
    runner = SinkRunner(
        sink,
        bootstrap="127.0.0.1:1",  # never contacted: no start()
        topics=Topics.with_prefix("t"),
        group="g",
        batch_size=batch_size,
        batch_timeout=0.1,
        dead_letters=dead,  # type: ignore[arg-type]
    )
    committed: list[Any] = []

    async def commit(records: Any) -> None:
        committed.extend(records)

    runner._commit = commit  # type: ignore[method-assign]
    try:
        yield runner, committed
    finally:
        await runner._consumer.stop()  # created, never started


def _record(offset: int, value: bytes, key: bytes | None = None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t.replies", 0, offset, 0, 0, key, value, None, len(value), 0, [])


REPLIES = SAMPLE_REPLIES[:8]


async def test_replies_of_groups_are_written_once_within_the_batch_size() -> None:
    sink, dead = Recording(), DeadLetters()
    async with _runner(sink, dead, batch_size=3) as (runner, committed):
        records = [
            _record(0, ReplyGroup(REPLIES[:5]).encode()),
            _record(1, REPLIES[5].encode()),
            _record(2, ReplyGroup(REPLIES[6:8]).encode()),
        ]
        await runner._deliver(records)
        assert [r for batch in sink.batches for r in batch] == [r.reply_id for r in REPLIES]
        assert max(len(batch) for batch in sink.batches) == 3
        assert committed == records
        assert dead.sent == []


async def test_a_bad_reply_of_a_group_is_dead_lettered_alone() -> None:
    sink, dead = Recording(), DeadLetters()
    async with _runner(sink, dead, batch_size=100) as (runner, committed):
        good = [r.encode() for r in REPLIES[:3]]
        bad = good[1].replace(b'"parts_expected":', b'"parts_expected":-', 1)
        record = _record(7, ReplyGroup.encode_replies([good[0], bad, good[2]]), key=b"k")
        await runner._deliver([record])
        assert sink.batches == [[REPLIES[0].reply_id, REPLIES[2].reply_id]]
        [letter] = dead.sent
        assert letter["record"] == bad.decode()  # that reply, not the group
        assert (letter["topic"], letter["partition"], letter["offset"]) == ("t.replies", 0, 7)
        assert committed == [record]


async def test_a_broken_group_is_dead_lettered_whole() -> None:
    sink, dead = Recording(), DeadLetters()
    async with _runner(sink, dead, batch_size=100) as (runner, _):
        broken = b'{"v":1,"replies":[' + REPLIES[0].encode()  # cut short
        await runner._deliver([_record(3, broken, key=b"k")])
        assert sink.batches == []
        [letter] = dead.sent
        assert letter["record"] == broken.decode()
        assert letter["key"] == "k"


async def test_a_reply_the_store_refuses_is_dead_lettered_alone_from_its_group() -> None:
    poison = REPLIES[2]
    sink, dead = Recording(poison=poison.reply_id), DeadLetters()
    async with _runner(sink, dead, batch_size=100) as (runner, committed):
        group = _record(0, ReplyGroup(REPLIES[:4]).encode(), key=REPLIES[0].reply_id.encode())
        alone = _record(1, REPLIES[4].encode(), key=REPLIES[4].reply_id.encode())
        await runner._deliver([group, alone])
        written = sorted(r for batch in sink.batches for r in batch)
        assert written == sorted(r.reply_id for r in (*REPLIES[:2], REPLIES[3], REPLIES[4]))
        [letter] = dead.sent
        # Replayable on its own: that reply's record, under its own key.
        assert Reply.decode(letter["record"].encode()) == poison
        assert letter["key"] == poison.reply_id
        assert committed == [group, alone]
