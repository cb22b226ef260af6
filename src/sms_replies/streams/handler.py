"""The worker's handling of raw events, a batch at a time: no Faust in here.

:mod:`.app` wires this to a topic, a table and a producer; tests drive it with
a dictionary for a table (``tests/unit/test_reassembly_handler.py``). Pure
decisions are :mod:`.reassembly`'s; this class keeps what lives beside the
table in one worker process: the expiry index, the count of replies waiting
for parts, and the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

import orjson

from sms_replies import metrics
from sms_replies.bounds import Bounds, check_decoded_part
from sms_replies.erasures import ErasureList
from sms_replies.records import (
    ExpiryTick,
    RawGroup,
    RawPart,
    Reply,
    decode_raw,
    split_group,
)
from sms_replies.streams.expiry import ExpiryIndex
from sms_replies.streams.reassembly import (
    Closed,
    KeyState,
    Step,
    accept,
    expire_due,
    next_deadline,
    recovery_deadline,
)

log = logging.getLogger(__name__)

PublishReply = Callable[[Reply], Awaitable[None]]
#: Sends what ``publish`` held back during a batch (:class:`.outbox.ReplyOutbox`).
FlushReplies = Callable[[], Awaitable[None]]
PublishDeadLetter = Callable[[bytes, str], Awaitable[None]]
#: The table's entries per partition (all this worker holds), read in the context of an event.
ScanTable = Callable[[Any], Mapping[int, Iterable[tuple[bytes, bytes]]]]

DEFAULT_BOUNDS: Final = Bounds()

#: Longest error message kept in a dead letter (messages may quote the record).
MAX_ERROR_CHARS: Final = 1000


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
        scan_table: ScanTable,
        bounds: Bounds = DEFAULT_BOUNDS,
        erasures: ErasureList | None = None,
        flush_replies: FlushReplies | None = None,
    ) -> None:
        self._bounds = bounds
        # Erased numbers: their parts are dropped, their held state deleted.
        self._erasures = erasures
        self._purged: dict[int, int] = {}  # partition -> erasure list generation purged
        self._windows = {"timeout_ms": timeout_ms, "horizon_ms": horizon_ms}
        self._publish = publish
        self._flush_replies = flush_replies
        self._dead_letter = dead_letter
        self._scan_table = scan_table
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
            for name in ("single", "part", "duplicate", "dead_letter", "erased")
        }
        # Counted here, added to the counters once a batch (an inc takes a lock: a
        # third of a microsecond, twice a single reply).
        self._emitted_count = dict.fromkeys(self._emitted, 0)
        self._processed_count = dict.fromkeys(self._processed, 0)

    async def handle_batch(self, batch: Batch, events: Sequence[Any]) -> None:
        """Every event in order, then the batch's table writes."""
        if self._erasures is not None:
            self._erasures.refresh()  # a stat, unless `erase` added a number
        try:
            for event in events:
                await self.on_event(batch, event)
            if self._flush_replies is not None:
                await self._flush_replies()  # what ``publish`` held back, out before the state
            await batch.flush()
        finally:
            self.count_metrics()

    def count_metrics(self) -> None:
        """Add what was counted since the last call to the metrics (once a batch)."""
        for complete, count in self._emitted_count.items():
            if count:
                self._emitted[complete].inc(count)
                self._emitted_count[complete] = 0
        for name, count in self._processed_count.items():
            if count:
                self._processed[name].inc(count)
                self._processed_count[name] = 0

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions taken away by a rebalance: rebuilt from the table if they come back."""
        lost = list(partitions)
        self.index.forget(lost)
        for partition in lost:
            self.waiting.pop(partition, None)

    async def on_event(self, batch: Batch, event: Any) -> None:
        # Bad data goes to the dead-letter topic: crashing would stall the stream.
        # What fails in publishing or writing is not the record's fault: it escapes,
        # the batch is not acked, and the worker exits before any commit.
        value = event.value
        try:
            if not isinstance(value, bytes):
                raise TypeError(f"a raw record is bytes, not {type(value).__name__}")
            record = decode_raw(value)
        except Exception as exc:
            pieces = split_group(value) if isinstance(value, bytes) else None
            if pieces is None:
                await self._reject(value, exc)
            else:  # a group with bad parts: those go to the dead-letter topic, alone
                for piece in pieces:
                    await self.on_group_piece(batch, event, piece)
            return
        if isinstance(record, ExpiryTick):
            # The index is rebuilt from the table itself: let it see this batch.
            await batch.flush()
            await self.on_tick(batch, event, record)
        elif isinstance(record, RawGroup):
            for part in record.parts:
                await self.on_decoded_part(batch, event, part, None)
        else:
            await self.on_decoded_part(batch, event, record, value)

    async def on_group_piece(self, batch: Batch, event: Any, value: bytes) -> None:
        """One part of a group that did not decode as a whole."""
        try:
            part = RawPart.decode(value)
        except Exception as exc:
            await self._reject(value, exc)
            return
        await self.on_decoded_part(batch, event, part, value)

    async def on_decoded_part(
        self, batch: Batch, event: Any, part: RawPart, value: bytes | None
    ) -> None:
        """A decoded part: within the bounds, handled; beyond them, a dead letter."""
        try:
            check_decoded_part(part, self._bounds)
        except Exception as exc:
            await self._reject(part.encode() if value is None else value, exc)
            return
        await self.on_part(batch, event, part, value)

    async def on_part(
        self, batch: Batch, event: Any, part: RawPart, value: bytes | None = None
    ) -> None:
        """``part`` of ``event``'s partition; ``value``: its record, for a dead letter
        (None: encoded again if needed, the part came in a group)."""
        if self._is_erased(part.sender):
            self._drop_erased(batch, event, part.partition_key if part.concat else None)
            return
        if part.concat is None:
            await self._emit(accept(None, part).replies)
            self._processed_count["single"] += 1
            return
        key = part.partition_key
        try:
            held = batch.get(key, event)
            before = KeyState.decode(held) if held else None
            step = accept(before, part)
            fitted = None if step.duplicate else fit_state(step, self._bounds.max_value_bytes)
        except Exception as exc:  # a state we cannot read, or a bug: data, not a crash
            await self._reject(part.encode() if value is None else value, exc)
            return
        if fitted is None:
            # No state change; a reply it belongs to is published again (replay-safe),
            # and the state written again: a replay after a crash finds the store
            # ahead of its changelog (the store is written first), and a take-over
            # or a standby only ever sees the changelog.
            self._write_again(batch, event, key, held)
            await self._emit(step.replies)
        else:
            await self._apply(batch, event, key, before, *fitted)
        self._processed_count["duplicate" if step.duplicate else "part"] += 1

    def _write_again(self, batch: Batch, event: Any, key: bytes, held: bytes | None) -> None:
        """Stage the state already held, for its changelog record (too large: never sent)."""
        if held is not None and len(held) <= self._bounds.max_value_bytes:
            batch.set(key, held, event)

    async def _reject(self, value: Any, exc: Exception) -> None:
        log.warning("raw record sent to the dead-letter topic: %s", _error(exc), exc_info=exc)
        raw = value if isinstance(value, bytes) else repr(value).encode()
        await self._dead_letter(raw, _error(exc))
        self._processed_count["dead_letter"] += 1

    async def on_tick(self, batch: Batch, event: Any, tick: ExpiryTick) -> None:
        partition: int = event.message.partition
        if not self.index.is_indexed(partition):
            self._rebuild_indexes(event, partition)
        self._purge_erased(batch, event, partition)
        for key in self.index.pop_due(partition, tick.now_ms):
            held = batch.get(key, event)
            state = self._readable(key, held)
            if state is None:
                continue
            step = expire_due(state, tick.now_ms, **self._windows)
            if step.pending is state:  # not due, or a replayed tick: no state change
                if step.replies:  # the replayed tick that expired it: as for a duplicate
                    self._write_again(batch, event, key, held)
                await self._emit(step.replies)
                self.index.schedule(partition, key, self._deadline(state))
            else:
                await self._apply(
                    batch, event, key, state, *fit_state(step, self._bounds.max_value_bytes)
                )
        metrics.PENDING_MESSAGES.set(sum(self.waiting.values()))

    def _readable(self, key: bytes, value: bytes | None) -> KeyState | None:
        """The state held under ``key``; None if there is none or it cannot be read."""
        if not value:
            return None
        try:
            return KeyState.decode(value)
        except Exception:
            # Not ours to fix at a tick: a part of this key dead-letters it.
            log.exception("unreadable state under key %r, left as it is", key[:100])
            return None

    def _rebuild_indexes(self, event: Any, partition: int) -> None:
        """``partition``'s index and every other one not built yet, from one scan of the
        table (a scan per partition read the whole table each time: at 13,000 keys, a
        seventh of the worker's CPU in the reassembly benchmark)."""
        entries = self._scan_table(event)
        for scanned in sorted({partition, *entries}):
            if not self.index.is_indexed(scanned):
                self._rebuild_index(scanned, entries.get(scanned, ()))

    def _rebuild_index(self, partition: int, entries: Iterable[tuple[bytes, bytes]]) -> None:
        states = [
            (key, state)
            for key, value in entries
            if (state := self._readable(key, value)) is not None
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

    def _deadline(self, state: KeyState) -> int:
        return next_deadline(state, **self._windows)

    async def _apply(
        self,
        batch: Batch,
        event: Any,
        key: bytes,
        before: KeyState | None,
        step: Step,
        encoded: bytes | None,
    ) -> None:
        """Stage ``step``'s state (``encoded``) and publish its replies."""
        partition: int = event.message.partition
        batch.set(key, encoded, event)
        if step.pending is not None:
            self.index.schedule(partition, key, self._deadline(step.pending))
        was_waiting = before is not None and bool(before.parts)
        is_waiting = step.pending is not None and bool(step.pending.parts)
        self.waiting[partition] = self.waiting.get(partition, 0) + is_waiting - was_waiting
        await self._emit(step.replies)

    def _is_erased(self, sender: str) -> bool:
        return self._erasures is not None and self._erasures.is_erased(sender)

    def _drop_erased(self, batch: Batch, event: Any, key: bytes | None) -> None:
        """A part of an erased number: dropped, with whatever its key holds."""
        self._processed_count["erased"] += 1
        if key is not None and (held := batch.get(key, event)):
            self._delete(batch, event, key, held)

    def _delete(self, batch: Batch, event: Any, key: bytes, held: bytes) -> None:
        partition: int = event.message.partition
        state = self._readable(key, held)
        batch.set(key, None, event)  # the changelog gets a tombstone too
        if state is not None and state.parts:
            self.waiting[partition] = self.waiting.get(partition, 0) - 1

    def _purge_erased(self, batch: Batch, event: Any, partition: int) -> None:
        """Once per growth of the erasure list: delete this partition's keys of erased numbers."""
        erasures = self._erasures
        if erasures is None or self._purged.get(partition) == erasures.generation:
            return
        self._purged[partition] = erasures.generation
        if not len(erasures):
            return
        purged = 0
        for key, value in list(self._scan_table(event).get(partition, ())):
            # A key is recipient|sender|ref|total (contract.RawPart.reassembly_key).
            fields = key.split(b"|")
            if len(fields) == 4 and erasures.is_erased(fields[1].decode("utf-8", "replace")):
                self._delete(batch, event, key, value)
                purged += 1
        if purged:
            log.info("partition %d: state of erased numbers deleted (%d keys)", partition, purged)

    async def _emit(self, replies: tuple[Reply, ...]) -> None:
        for reply in replies:
            if self._is_erased(reply.sender):
                continue
            if _reply_fits(reply, self._bounds.max_value_bytes):
                await self._publish(reply)
                self._emitted_count[reply.complete] += 1
            else:  # only from a state written under larger bounds
                value = reply.encode()
                await self._reject(value, ValueError(f"a reply of {len(value)} bytes, too large"))


def fit_state(step: Step, max_bytes: int) -> tuple[Step, bytes | None]:
    """``step`` with its state encoded, within ``max_bytes`` whatever it held.

    Under the settings' bounds a state always fits (see :mod:`sms_replies.bounds`);
    one that does not (written under larger bounds) has its message closed as
    incomplete, keeping only that as the tombstone, or no tombstone at all.
    """
    state = step.pending
    if state is None:
        return step, None
    encoded = state.encode()
    if len(encoded) <= max_bytes:
        return step, encoded
    log.warning("a state of %d bytes is beyond the bound: message closed", len(encoded))
    replies = step.replies
    if state.parts:
        message = tuple(state.parts[n] for n in sorted(state.parts))
        closed = Closed(
            total=state.total, message=message, expired=True, at_ms=state.last_received_ms
        )
        replies = (*replies, closed.reply())
        smaller = KeyState(total=state.total, closed=closed)
        encoded = smaller.encode()
        if len(encoded) <= max_bytes:
            return Step(pending=smaller, replies=replies), encoded
    return Step(pending=None, replies=replies), None


def dead_letter_record(
    stage: str, value: bytes, error: str, max_bytes: int, topic: str | None = None
) -> bytes:
    """The dead-letter envelope of ``value``, within ``max_bytes`` (the record cut if need be).

    ``topic``: where ``value`` came from, for ``sms-replies dead-letters replay``.
    """
    record = value.decode("utf-8", "replace")
    envelope: dict[str, Any] = {"stage": stage, "error": error[:MAX_ERROR_CHARS], "record": record}
    if topic is not None:
        envelope["topic"] = topic
    encoded = orjson.dumps(envelope)
    if len(encoded) <= max_bytes:
        return encoded
    # At most 6 bytes per character once escaped (\u00XX): this many always fit.
    keep = max(0, (max_bytes - 2 * MAX_ERROR_CHARS * 6 - 256) // 6)
    envelope.update(record=record[:keep], record_bytes=len(value), truncated=True)
    return orjson.dumps(envelope)


def _reply_fits(reply: Reply, max_bytes: int) -> bool:
    # Cheap bound first (6 bytes a character at worst): encoding twice is for outliers.
    chars = len(reply.text) + sum(len(i) + 3 for i in reply.provider_message_ids)
    return 6 * chars + 4096 <= max_bytes or len(reply.encode()) <= max_bytes


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
