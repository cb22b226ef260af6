"""A raw record the consumer dropped on its way to the streams is fetched again (streams.holes).

The fake consumer below fetches as Faust's does (its position moves past what
it fetched) and can drop fetched records instead of handing them over, as
Faust's ``getmany`` does for a partition paused at that instant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP

from sms_replies.streams.holes import MAX_REFETCHES, refetch_holes

RAW = TP("raw", 0)
CHANGELOG = TP("changelog", 0)


@dataclass
class Message:
    offset: int


@dataclass
class Consumer:
    """Offsets ``0..ends[tp]-1`` per partition, fetched ``batch`` at a time."""

    ends: dict[TP, int]
    committed: dict[TP, int]
    batch: int = 4
    position: dict[TP, int] = field(default_factory=dict)
    _read_offset: dict[TP, int | None] = field(default_factory=dict)
    drop: dict[TP, set[int]] = field(default_factory=dict)  # fetched, never handed over
    gone: dict[TP, set[int]] = field(default_factory=dict)  # deleted from the log
    seeks: list[tuple[TP, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.position = dict(self.committed)

    async def perform_seek(self) -> None:
        self.position.update(self.committed)
        self._read_offset.update(self.committed)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.position[tp] = offset
        self._read_offset[tp] = offset

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        fetched = {}
        for tp, end in self.ends.items():
            start = self.position[tp]
            offsets = range(start, min(end, start + self.batch))
            fetched[tp] = [o for o in offsets if o not in self.gone.get(tp, set())]
            self.position[tp] = offsets.stop
        for tp, offsets in fetched.items():
            for offset in offsets:
                if offset in self.drop.get(tp, set()):
                    self.drop[tp].discard(offset)  # dropped once, there when fetched again
                    continue
                yield tp, Message(offset)


async def handed_over(consumer: Any, rounds: int = 20) -> dict[TP, list[int]]:
    seen: dict[TP, list[int]] = {}
    for _ in range(rounds):
        async for tp, message in consumer.getmany(1.0):
            seen.setdefault(tp, []).append(message.offset)
    return seen


async def test_records_dropped_after_a_seek_are_fetched_again_in_order() -> None:
    consumer = Consumer(ends={RAW: 12}, committed={RAW: 2})
    refetch_holes(consumer, {"raw"})
    await consumer.perform_seek()
    consumer.drop[RAW] = {3, 4}  # paused for an instant: fetched, not handed over
    seen = await handed_over(consumer)
    assert consumer.seeks == [(RAW, 3)]
    # 2 then the hole: nothing past it until 3 and 4 came again.
    assert seen[RAW] == list(range(2, 12))


async def test_the_committed_offset_itself_is_not_skipped() -> None:
    # Faust's drain loop lets one missing offset through without even a gap:
    # the record at the committed offset is the one to watch.
    consumer = Consumer(ends={RAW: 8}, committed={RAW: 5})
    refetch_holes(consumer, {"raw"})
    await consumer.perform_seek()
    consumer.drop[RAW] = {5}
    seen = await handed_over(consumer)
    assert seen[RAW] == [5, 6, 7]


async def test_records_really_gone_are_skipped_after_a_few_refetches() -> None:
    consumer = Consumer(ends={RAW: 10}, committed={RAW: 0})
    refetch_holes(consumer, {"raw"})
    await consumer.perform_seek()
    consumer.gone[RAW] = {1, 2}  # retention deleted them
    seen = await handed_over(consumer)
    assert consumer.seeks == [(RAW, 1)] * MAX_REFETCHES
    assert seen[RAW] == [0, 3, 4, 5, 6, 7, 8, 9]


async def test_other_topics_are_handed_over_as_fetched() -> None:
    consumer = Consumer(ends={RAW: 4, CHANGELOG: 6}, committed={RAW: 0, CHANGELOG: 0})
    refetch_holes(consumer, {"raw"})
    await consumer.perform_seek()
    consumer.gone[CHANGELOG] = {2}  # compacted away: a hole that is normal there
    seen = await handed_over(consumer)
    assert seen[CHANGELOG] == [0, 1, 3, 4, 5]
    assert seen[RAW] == [0, 1, 2, 3]
    assert consumer.seeks == []
