"""Feed one sink from the replies topic: batch, write, then commit.

Each sink has its own consumer group (``<prefix>.sink.<name>``), so a slow or
failing sink never holds back another one, the worker or the ingress. Offsets
are committed only after ``Sink.write`` returned (quix-streams' "flush before
commit"): a crash replays the batch, and the sink's idempotence by
``reply_id`` absorbs it. Records that cannot be decoded or that the store
rejects for good go to the dead-letter topic with the error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from sms_replies import dead_letters, metrics
from sms_replies.erasures import ErasureList
from sms_replies.errors import SinkWriteError
from sms_replies.records import (
    RecordDecodeError,
    Reply,
    Topics,
    decode_replies,
    is_reply_group,
    split_replies,
)
from sms_replies.sinks.base import Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff between retries of one batch."""

    initial: float = 0.2
    maximum: float = 30.0

    def delay(self, attempt: int) -> float:
        return float(min(self.maximum, self.initial * 2 ** min(attempt, 30)))


@dataclass
class SinkProgress:
    """What a runner has done, for health checks and tests."""

    written: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0
    last_error: str | None = None
    last_write_monotonic: float | None = None
    lag: int = 0
    assigned: set[TopicPartition] = field(default_factory=set)


def group_id(prefix: str, sink_name: str) -> str:
    return f"{prefix}.sink.{sink_name}"


class SinkRunner:
    """Runs one sink until :meth:`stop`; the current batch is written before it returns."""

    def __init__(
        self,
        sink: Sink,
        *,
        bootstrap: str,
        topics: Topics,
        group: str,
        batch_size: int,
        batch_timeout: float,
        dead_letters: AIOKafkaProducer,
        backoff: Backoff | None = None,
        fetch_max_wait_ms: int = 500,
        erasures: ErasureList | None = None,
    ) -> None:
        self.sink = sink
        self.erasures = erasures  # replies of erased numbers are never written
        self.topics = topics
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.dead_letters = dead_letters
        self.backoff = backoff or Backoff()
        self.progress = SinkProgress()
        self._committed: dict[TopicPartition, int] = {}
        # The record each reply of the current batch was decoded from (by id()).
        self._sources: dict[int, ConsumerRecord[bytes, bytes]] = {}
        self._stopping = asyncio.Event()
        self._consumer = AIOKafkaConsumer(
            topics.replies,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=batch_size,
            # Tansu and Kafka alike: a dead member blocks the group until this expires.
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            # Short on the embedded broker: see sms_replies.broker.tansu.
            fetch_max_wait_ms=fetch_max_wait_ms,
        )

    def stop(self) -> None:
        """Ask the runner to finish its current batch and return. Idempotent."""
        self._stopping.set()

    async def run(self) -> None:
        await self._set_up()
        await self._consumer.start()
        try:
            while not self._stopping.is_set():
                records = await self._next_batch()
                self._read_erasures()  # between two writes: erase waits for this
                if records:
                    await self._deliver(records)
        finally:
            await self._consumer.stop()  # sends LeaveGroup: the next member joins at once

    async def _set_up(self) -> None:
        """``Sink.setup`` with the same retries as writes: a store down at start is an outage."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                await self.sink.setup()
                return
            except Exception as exc:
                if isinstance(exc, SinkWriteError) and not exc.retriable:
                    raise
                delay = self.backoff.delay(attempt)
                self.progress.last_error = str(exc)
                log.warning(
                    "sink %s: setup failed (%s); retry in %.1fs", self.sink.name, exc, delay
                )
                attempt += 1
                await asyncio.sleep(delay)

    async def _next_batch(self) -> list[ConsumerRecord[bytes, bytes]]:
        """Up to batch_size records, waiting at most batch_timeout once the first arrived.

        Nothing within an idle poll (0.2 s): an empty batch, so that the run loop
        reads the erasure list while idle too (``erase`` waits for that).
        """
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline: float | None = None
        while len(records) < self.batch_size and not self._stopping.is_set():
            wait = 0.2 if deadline is None else max(0.0, deadline - time.monotonic())
            fetched = await self._consumer.getmany(
                timeout_ms=int(wait * 1000), max_records=self.batch_size - len(records)
            )
            for partition_records in fetched.values():
                records.extend(partition_records)
            if not records:
                break  # idle
            if deadline is None:
                deadline = time.monotonic() + self.batch_timeout
            if time.monotonic() >= deadline:
                break
        self.progress.assigned = set(self._consumer.assignment())
        self._record_lag(records)
        return records

    def _record_lag(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Replies not yet written: fetch high watermarks (right on Tansu too) minus position."""
        next_offsets = {TopicPartition(r.topic, r.partition): r.offset + 1 for r in records}
        lag = 0
        for tp in self.progress.assigned:
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            position = next_offsets.get(tp, self._committed.get(tp, highwater))
            lag += max(highwater - position, 0)
        self.progress.lag = lag
        metrics.SINK_LAG.labels(self.sink.name).set(lag)

    def _read_erasures(self) -> None:
        if self.erasures is not None:
            self.erasures.refresh()  # a stat, unless `erase` added a number
            self.erasures.acknowledge(self.sink.name)

    async def _deliver(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        replies: list[Reply] = []
        self._sources.clear()
        for record in records:
            for reply in await self._decode(record):
                replies.append(reply)
                self._sources[id(reply)] = record
        if self.erasures is not None and replies:
            replies = [r for r in replies if not self.erasures.is_erased(r.sender)]
        # A record may hold several replies (a ReplyGroup): writes stay within batch_size.
        for start in range(0, len(replies), self.batch_size):
            await self._write(replies[start : start + self.batch_size])
        await self._commit(records)

    async def _decode(self, record: ConsumerRecord[bytes, bytes]) -> list[Reply]:
        """The record's replies; what does not decode is dead-lettered (a bad reply of a
        group alone, the others kept)."""
        value = record.value or b""
        try:
            return decode_replies(value)
        except RecordDecodeError as exc:
            pieces = split_replies(value)
            if pieces is None:  # not a group, or not even its envelope: the record whole
                await self._dead_letter(record, str(exc))
                return []
        replies: list[Reply] = []
        for piece in pieces:
            try:
                replies.append(Reply.decode(piece))
            except RecordDecodeError as exc:
                await self._dead_letter(record, str(exc), value=piece, key=None)
        return replies

    async def _write(self, replies: list[Reply]) -> None:
        """Write with retries; isolate and dead-letter replies the store rejects for good."""
        attempt = 0
        while True:
            try:
                await self.sink.write(replies)
            except SinkWriteError as exc:
                if not exc.retriable:
                    await self._isolate_poison(replies, exc)
                    return
                error = exc
            except Exception as exc:  # an unconverted driver error: assume an outage
                error = SinkWriteError(f"{type(exc).__name__}: {exc}", retriable=True)
            else:
                self._record_written(len(replies))
                return
            self.progress.failed_attempts += 1
            self.progress.last_error = str(error)
            metrics.SINK_WRITE_FAILURES.labels(self.sink.name).inc()
            delay = self.backoff.delay(attempt)
            log.warning(
                "sink %s: write of %d replies failed (%s); retry in %.1fs",
                self.sink.name,
                len(replies),
                error,
                delay,
            )
            attempt += 1
            # Keep retrying while stopping too: giving up would lose the batch on
            # the embedded broker; a supervisor's kill timeout bounds the wait.
            await asyncio.sleep(delay)

    async def _isolate_poison(self, replies: list[Reply], error: SinkWriteError) -> None:
        if len(replies) == 1:
            reply = replies[0]
            record = self._sources.get(id(reply))
            if record is not None and record.value is not None and not is_reply_group(record.value):
                await self._dead_letter(record, str(error))  # the record as it was read
            else:  # one reply of a group: that reply alone, replayable on its own
                await self._dead_letter(
                    record, str(error), value=reply.encode(), key=reply.reply_id.encode()
                )
            return
        middle = len(replies) // 2
        for half in (replies[:middle], replies[middle:]):
            await self._write(half)

    def _record_written(self, count: int) -> None:
        self.progress.written += count
        self.progress.last_write_monotonic = time.monotonic()
        self.progress.last_error = None
        metrics.SINK_REPLIES_WRITTEN.labels(self.sink.name).inc(count)

    async def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes] | None,
        error: str,
        *,
        value: bytes | None = None,
        key: bytes | None = None,
    ) -> None:
        """Publish the envelope of ``record``, or of ``value`` read from it (one reply of
        a group, with ``key``), replayable."""
        if value is None:
            value = (record.value if record is not None else None) or b""
            key = record.key if record is not None else None
        fields = dead_letters.envelope(
            origin=("sink", self.sink.name),
            error=error,
            value=value,
            topic=record.topic if record is not None else self.topics.replies,
            key=key,
            partition=record.partition if record is not None else None,
            offset=record.offset if record is not None else None,
        )
        envelope = dead_letters.encode(fields)
        while True:
            try:
                await self.dead_letters.send_and_wait(self.topics.dead_letter, envelope)
                break
            except KafkaError as exc:
                log.warning("dead-letter publish failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
        self.progress.dead_lettered += 1
        metrics.SINK_DEAD_LETTERS.labels(self.sink.name).inc()
        log.error("sink %s: record sent to %s: %s", self.sink.name, self.topics.dead_letter, error)

    async def _commit(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        try:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
        except CommitFailedError as exc:
            # A rebalance took the partitions away; their new owner replays the
            # batch and the idempotent write absorbs it.
            log.warning("sink %s: commit after rebalance failed: %s", self.sink.name, exc)
