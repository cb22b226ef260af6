"""The worker's handling of raw events, a batch at a time: no Faust in here.

:mod:`.app` wires this to a topic, a table and a producer; tests drive it with
a dictionary for a table (``tests/unit/test_reassembly_handler.py``). Pure
decisions are :mod:`.reassembly`'s; this class keeps what lives beside the
table in one worker process: the expiry index, the count of replies waiting
for parts, and the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from sms_replies import metrics
from sms_replies.contract import ExpiryTick, RawPart, Reply, decode_raw
from sms_replies.streams.expiry import ExpiryIndex
from sms_replies.streams.reassembly import (
    PendingMessage,
    Step,
    accept,
    expire_due,
    next_deadline,
    recovery_deadline,
)

log = logging.getLogger(__name__)

PublishReply = Callable[[Reply], Awaitable[None]]
PublishDeadLetter = Callable[[bytes, str], Awaitable[None]]
#: The table entries of one partition, read in the context of one of its events.
ScanPartition = Callable[[Any, int], Iterable[tuple[bytes, bytes]]]


class Batch(Protocol):
    """Table access for one batch of events (:class:`.batch.TableBatch`)."""

    def get(self, key: bytes, event: Any) -> bytes | None: ...

    def set(self, key: bytes, value: bytes | None, event: Any) -> None: ...

    async def flush(self) -> None: ...


class ReassemblyHandler:
    """Raw events in, table writes staged on a :class:`Batch`, replies published.

    An event is anything with ``value`` (the raw record's bytes) and
    ``message.partition``, as Faust's events have.
    """

    def __init__(
        self,
        *,
        timeout_ms: int,
        horizon_ms: int,
        publish: PublishReply,
        dead_letter: PublishDeadLetter,
        scan_partition: ScanPartition,
    ) -> None:
        self._windows = {"timeout_ms": timeout_ms, "horizon_ms": horizon_ms}
        self._publish = publish
        self._dead_letter = dead_letter
        self._scan_partition = scan_partition
        self.index = ExpiryIndex()
        #: Long replies waiting for parts, per partition of this worker (the gauge).
        self.waiting: dict[int, int] = {}
        # Label lookups cost a lock and a dict per call: resolve them once.
        self._emitted = {
            True: metrics.REPLIES_EMITTED.labels("true"),
            False: metrics.REPLIES_EMITTED.labels("false"),
        }
        self._processed = {
            name: metrics.PARTS_PROCESSED.labels(name)
            for name in ("single", "part", "duplicate", "dead_letter")
        }

    async def handle_batch(self, batch: Batch, events: Sequence[Any]) -> None:
        """Every event in order, then the batch's table writes."""
        for event in events:
            await self.on_event(batch, event)
        await batch.flush()

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions taken away by a rebalance: rebuilt from the table if they come back."""
        lost = list(partitions)
        self.index.forget(lost)
        for partition in lost:
            self.waiting.pop(partition, None)

    async def on_event(self, batch: Batch, event: Any) -> None:
        value: bytes = event.value
        try:
            record = decode_raw(value)
            if isinstance(record, ExpiryTick):
                # The index is rebuilt from the table itself: let it see this batch.
                await batch.flush()
                await self.on_tick(batch, event, record)
            else:
                await self.on_part(batch, event, record)
        except Exception as exc:
            # A record we cannot process is data for the dead-letter topic;
            # crashing the agent would skip it silently and stall the stream.
            log.exception("raw record sent to the dead-letter topic")
            await self._dead_letter(value, f"{type(exc).__name__}: {exc}")
            self._processed["dead_letter"].inc()

    async def on_part(self, batch: Batch, event: Any, part: RawPart) -> None:
        if part.concat is None:
            await self._emit(accept(None, part).replies)
            self._processed["single"].inc()
            return
        key = part.partition_key
        held = batch.get(key, event)
        before = PendingMessage.decode(held) if held else None
        step = accept(before, part)
        if step.duplicate:
            # No state change; a reply it belongs to is published again (replay-safe).
            await self._emit(step.replies)
        else:
            await self._apply(batch, event, key, before, step)
        self._processed["duplicate" if step.duplicate else "part"].inc()

    async def on_tick(self, batch: Batch, event: Any, tick: ExpiryTick) -> None:
        partition: int = event.message.partition
        if not self.index.is_indexed(partition):
            self._rebuild_index(event, partition)
        for key in self.index.pop_due(partition, tick.now_ms):
            held = batch.get(key, event)
            if held:
                state = PendingMessage.decode(held)
                step = expire_due(state, tick.now_ms, **self._windows)
                if step.pending is state:  # not due (or a replayed tick): no table write
                    await self._emit(step.replies)
                    self.index.schedule(partition, key, self._deadline(state))
                else:
                    await self._apply(batch, event, key, state, step)
        metrics.PENDING_MESSAGES.set(sum(self.waiting.values()))

    def _rebuild_index(self, event: Any, partition: int) -> None:
        states = [
            (key, PendingMessage.decode(value))
            for key, value in self._scan_partition(event, partition)
            if value
        ]
        self.index.rebuild(
            partition,
            ((key, recovery_deadline(state, **self._windows)) for key, state in states),
        )
        self.waiting[partition] = sum(1 for _, state in states if state.parts)
        log.info(
            "partition %d: %d keys indexed, %d replies waiting for parts",
            partition,
            len(states),
            self.waiting[partition],
        )

    def _deadline(self, state: PendingMessage) -> int:
        return next_deadline(state, **self._windows)

    async def _apply(
        self,
        batch: Batch,
        event: Any,
        key: bytes,
        before: PendingMessage | None,
        step: Step,
    ) -> None:
        partition: int = event.message.partition
        if step.pending is None:
            batch.set(key, None, event)
        else:
            batch.set(key, step.pending.encode(), event)
            self.index.schedule(partition, key, self._deadline(step.pending))
        was_waiting = before is not None and bool(before.parts)
        is_waiting = step.pending is not None and bool(step.pending.parts)
        self.waiting[partition] = self.waiting.get(partition, 0) + is_waiting - was_waiting
        await self._emit(step.replies)

    async def _emit(self, replies: tuple[Reply, ...]) -> None:
        for reply in replies:
            await self._publish(reply)
            self._emitted[reply.complete].inc()
