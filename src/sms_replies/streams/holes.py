"""No raw record is skipped: a hole in the offsets the worker is handed is fetched again.

Faust's consumer can drop fetched records on their way to the streams: its
``getmany`` discards what it fetched for a partition that is not active at that
instant, and stops a batch half-way when the flow is suspended or the
generation changes, while the fetcher's position is already past those records.
It happens at the end of a recovery, when ``on_recovery_completed`` resumes the
raw partitions, then seeks them to their committed offsets while the fetcher
already runs. The records after the hole are then delivered, and the drain
loop counts the hole as acknowledged (``Consumer._add_gap``, meant for
compacted or transactional topics, tolerating one missing offset without even
that): the next commit goes past records no agent ever saw. Seen in
``tests/integration/test_changelog_end_offsets.py[rocksdb-lost]``: a whole raw
partition's second parts committed unread (214/400 replies), or the one record
at the committed offset of some partitions (397/400), the restored table
complete all along (docs/benchmarks.md, Worker memory).

The raw topic is neither compacted nor written in transactions: its offsets
have no holes, so one in what the consumer hands over means dropped records.
:func:`refetch_holes` wraps the consumer's ``getmany``: it follows the next
offset due per raw partition (reset to the committed offsets at each seek) and,
on a record past it, seeks the partition back to it instead of handing the
record over, so the drain loop never sees a hole. Records a batch fetched
before the seek and handed over then are handed over again: replayed, which the
reassembly absorbs (docs/guarantees.md). A hole that persists after
:data:`MAX_REFETCHES` seeks (records really gone: retention deleted them before
they were read) is let through, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection
from typing import Any, Final

log = logging.getLogger(__name__)

#: Seeks back to one missing offset before the hole is accepted.
MAX_REFETCHES: Final = 5


def refetch_holes(consumer: Any, topics: Collection[str]) -> None:
    """Give ``consumer`` (a Faust consumer) hole-free delivery of ``topics``' records."""
    getmany = consumer.getmany
    perform_seek = consumer.perform_seek
    due: dict[Any, int] = {}  # partition -> next offset to hand over
    refetched: dict[Any, tuple[int, int]] = {}  # partition -> (missing offset, seeks back to it)

    async def perform_seek_and_follow() -> None:
        await perform_seek()
        # Faust's read offsets now hold the committed offsets: the next ones due.
        due.clear()
        for tp, offset in consumer._read_offset.items():
            if tp.topic in topics and offset is not None:
                due[tp] = offset

    # Same signature as Faust's Consumer.getmany, which it stands in for.
    async def getmany_without_holes(timeout: float) -> AsyncIterator[tuple[Any, Any]]:  # noqa: ASYNC109
        held: set[Any] = set()  # partitions sent back to a hole in this batch
        async for tp, message in getmany(timeout):
            if tp.topic not in topics:
                yield tp, message
                continue
            if tp in held:
                continue  # fetched again from the hole, in order
            expected = due.get(tp)
            offset: int = message.offset
            if expected is not None and offset > expected:
                hole, seeks = refetched.get(tp, (expected, 0))
                seeks = seeks if hole == expected else 0
                if seeks < MAX_REFETCHES:
                    refetched[tp] = (expected, seeks + 1)
                    log.warning(
                        "%s: offsets %d-%d not handed over since the last seek, fetched again",
                        tp,
                        expected,
                        offset - 1,
                    )
                    held.add(tp)
                    await consumer.seek(tp, expected)
                    continue
                log.warning("%s: offsets %d-%d missing, skipped", tp, expected, offset - 1)
            if expected is None or offset >= expected:
                due[tp] = offset + 1
            yield tp, message

    consumer.getmany = getmany_without_holes
    consumer.perform_seek = perform_seek_and_follow
