"""Publish raw callbacks to Kafka; an answer only once the broker acknowledged (acks=all).

Callbacks published in the same moment (the same turn of the event loop, or
within ``group_wait`` seconds) for the same partition travel as one record
(:mod:`.grouping`); each is answered once that record is acknowledged. A round's
records go as one produce request per leader, written here (``client.send``),
not through aiokafka's accumulator and sender; rejects go through the producer.

Driver errors become :class:`BrokerUnavailable` here. The producer is started
lazily and again after a failure, so the ingress comes up before the broker
and recovers from an outage without a restart.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition, errors
from aiokafka.errors import KafkaError, KafkaTimeoutError, LeaderNotAvailableError
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from sms_replies import metrics
from sms_replies.broker.partitioner import default_partitioner, partition_of
from sms_replies.broker.probe import PROBE_TIMEOUT_S, metadata_round_trip
from sms_replies.errors import BrokerUnavailable
from sms_replies.grouping import PartitionGroups, Record
from sms_replies.records import RawPart, Topics

log = logging.getLogger(__name__)
_ACCEPTED = metrics.CALLBACKS.labels("accepted")

#: A callback waiting for its record's acknowledgement, and when it was published
#: (perf_counter): both metrics are counted a record at a time (_acknowledge).
Waiter = tuple[asyncio.Future[None], float]


#: Largest raw record the ingress writes (a group of parts stays under it).
MAX_RECORD_BYTES = 1_000_000 - 4096


class Publisher:
    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        *,
        timeout: float,
        group_wait: float = 0.0,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.timeout = timeout
        self.group_wait = group_wait
        self._timeout_ms = int(timeout * 1000)
        self._producer: AIOKafkaProducer | None = None
        self._raw_partitions: tuple[int, ...] = ()
        self._groups: PartitionGroups[Waiter] = PartitionGroups(max_record_bytes)
        self._sending: asyncio.Task[None] | None = None
        self._send_scheduled = False
        self._starting = asyncio.Lock()
        # Deliveries awaited by callbacks, oldest first, with their deadlines.
        self._deadlines: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def connect(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    linger_ms=1,  # concurrent callbacks share a batch
                    partitioner=default_partitioner,  # aiokafka's, at a third of the CPU
                    request_timeout_ms=self._timeout_ms,
                )
                try:
                    await asyncio.wait_for(producer.start(), self.timeout)
                except (KafkaError, OSError, TimeoutError) as exc:
                    await producer.stop()
                    raise BrokerUnavailable(f"broker {self.bootstrap} unreachable: {exc}") from None
                try:
                    # The raw topic's partitions: callbacks are grouped per partition.
                    partitions = await asyncio.wait_for(
                        producer.partitions_for(self.topics.raw), self.timeout
                    )
                except (KafkaError, OSError, TimeoutError) as exc:
                    partitions, error = set(), repr(exc)
                else:
                    error = "no partitions"
                if not partitions:
                    await producer.stop()
                    raise BrokerUnavailable(f"topic {self.topics.raw}: {error}")
                # Fixed for the producer's life, as the worker's table partitions are.
                self._raw_partitions = tuple(sorted(partitions))
                log.info("connected to broker %s", self.bootstrap)
                self._producer = producer
                if self._watchdog is None:
                    self._watchdog = asyncio.create_task(self._expire_deliveries())
        return self._producer

    async def check(self) -> None:
        """A metadata round trip to the broker (:class:`BrokerUnavailable` if it fails):
        a producer object alone does not mean the broker is still there."""
        producer = await self.connect()
        await metadata_round_trip(producer.client, min(self.timeout, PROBE_TIMEOUT_S))

    async def publish(self, part: RawPart) -> None:
        """Write one raw part; returns once the broker acknowledged the record holding it."""
        started = time.perf_counter()
        if self._producer is None:
            await self.connect()
        partitions = self._raw_partitions
        key = part.partition_key
        # Kafka's default partitioner, as aiokafka would have placed the part alone.
        partition = partitions[partition_of(key, len(partitions))]
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._groups.add(partition, key, part.encode(), (acknowledged, started))
        # A round in flight drains the groups again once acknowledged: nothing to schedule.
        if not self._send_scheduled and self._sending is None:
            self._send_scheduled = True
            if self.group_wait > 0:
                asyncio.get_running_loop().call_later(self.group_wait, self._start_sending)
            else:  # after the other callbacks of this turn of the loop
                asyncio.get_running_loop().call_soon(self._start_sending)
        # The acknowledgement by the watchdog: no timer (asyncio.timeout) or task
        # (wait_for) per callback, a fifth of the publishing's CPU (cProfile).
        self._deadlines.append((started + self.timeout, acknowledged))
        try:
            await acknowledged
        except (KafkaError, TimeoutError) as exc:
            # Not acknowledged in time: maybe written, maybe not. The provider
            # retries on our 503 and reply_id makes a second copy harmless.
            raise BrokerUnavailable(f"broker did not acknowledge: {exc!r}") from None

    def _start_sending(self) -> None:
        self._send_scheduled = False
        if self._sending is None and len(self._groups):
            self._sending = asyncio.create_task(self._send_groups())

    async def _send_groups(self) -> None:
        """Send what was grouped, a round at a time, until nothing is left.

        One round in flight: the callbacks that arrive while the broker has not yet
        acknowledged a round group up for the next one (aiokafka would hold them
        as well: one produce request in flight per broker).
        """
        loop = asyncio.get_running_loop()
        try:
            while records := self._groups.drain():
                acknowledged = _Round(loop.create_future())
                for request in await self._produce_requests(records):
                    acknowledged.add(loop.create_task(request))
                if acknowledged.pending:
                    # Bounded by the watchdog (no asyncio.wait and its timer a round);
                    # the connection fails a request after its timeout anyway.
                    self._deadlines.append((time.perf_counter() + self.timeout, acknowledged.done))
                    with contextlib.suppress(KafkaError):
                        await acknowledged.done
        finally:
            self._sending = None

    async def _produce_requests(
        self, records: list[Record[Waiter]]
    ) -> list[Coroutine[Any, Any, None]]:
        """A produce request for each leader of the round's partitions, ready to send.

        The round is one ProduceRequest a broker, written here rather than through
        aiokafka's accumulator and sender: their per-batch and per-round Python (a
        MessageBatch and its futures a record, the sender's task, asyncio.wait and
        wake-ups a round) was about a quarter of the ingress's CPU per callback.
        Records whose leader is unknown, and failed requests, answer 503 (the
        provider retries) instead of aiokafka's retries within the timeout.
        """
        try:
            producer = self._producer or await self.connect()
        except Exception as exc:  # every waiter answers 503; the sender goes on
            log.warning("raw records not sent: %r", exc)
            for record in records:
                _settle_all(record.waiters, _kafka_error(exc))
            return []
        client = producer.client
        topic = self.topics.raw
        by_leader: dict[int, list[Record[Waiter]]] = {}
        for record in records:
            leader = client.cluster.leader_for_partition(TopicPartition(topic, record.partition))
            if leader is None or leader < 0:
                client.force_metadata_update()
                _settle_all(
                    record.waiters, LeaderNotAvailableError(f"partition {record.partition}")
                )
            else:
                by_leader.setdefault(leader, []).append(record)
        return [
            self._produce(client, leader, wave)
            for leader, led in by_leader.items()
            for wave in _one_record_a_partition(led)
        ]

    async def _produce(self, client: Any, leader: int, records: list[Record[Waiter]]) -> None:
        """One produce request (a batch a record, acks=all) and its answer to the waiters.

        Whatever fails answers the waiters at once (503): a task's exception would
        only be logged, and the callbacks would wait for the watchdog.
        """
        try:
            request = ProduceRequest(
                transactional_id=None,
                required_acks=-1,  # acks=all
                timeout=self._timeout_ms,
                topics=[
                    (self.topics.raw, [(r.partition, _batch(r.key, r.value)) for r in records])
                ],
            )
            response = await client.send(leader, request)
        except Exception as exc:
            error = _kafka_error(exc)
            log.warning(
                "raw records not acknowledged (%d callbacks answer 503): %r",
                sum(len(r.waiters) for r in records),
                error,
            )
            if error.invalid_metadata:
                client.force_metadata_update()
            for record in records:
                _settle_all(record.waiters, error)
            return
        try:
            _answer(client, response, records)
        except Exception:  # a response we cannot read: the callbacks left answer 503
            log.exception("produce response not understood")
            for record in records:
                _settle_all(record.waiters, KafkaError("produce response not understood"))

    async def publish_reject(self, record: bytes) -> None:
        """Keep a rejected request for audit (same durability as a callback)."""
        await self._send(self.topics.rejects, record, key=None)

    async def _send(self, topic: str, value: bytes, key: bytes | None) -> None:
        started = time.perf_counter()
        producer = self._producer or await self.connect()
        try:
            # Bounded by the producer's request timeout (metadata, a full buffer).
            delivery = await producer.send(topic, value, key=key)
            # The acknowledgement by the watchdog: no timer (asyncio.timeout) or task
            # (wait_for) per callback, a fifth of the publishing's CPU (cProfile).
            self._deadlines.append((started + self.timeout, delivery))
            await delivery
        except (KafkaError, TimeoutError) as exc:
            # Not acknowledged in time: maybe written, maybe not. The provider
            # retries on our 503 and reply_id makes a second copy harmless.
            raise BrokerUnavailable(f"broker did not acknowledge: {exc!r}") from None
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)

    async def _expire_deliveries(self) -> None:
        """Fail each delivery not acknowledged within ``timeout`` (the callback answers 503).

        Checked every tenth of the timeout: a late acknowledgement is answered at
        most that much after its deadline.
        """
        tick = min(max(self.timeout / 10, 0.01), 0.5)
        while True:
            await asyncio.sleep(tick)
            expire_deliveries(self._deadlines, time.perf_counter())

    async def stop(self) -> None:
        """Send what is grouped, flush and close. Idempotent."""
        self._start_sending()
        if self._sending is not None:
            await asyncio.shield(self._sending)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


def expire_deliveries(
    deadlines: collections.deque[tuple[float, asyncio.Future[Any]]], now: float
) -> int:
    """Drop settled deliveries from the front of ``deadlines`` and fail those past due.

    Deliveries settle about in the order they were sent: the scan stops at the
    first one still pending within its deadline. Returns how many were failed.
    """
    expired = 0
    while deadlines:
        deadline, delivery = deadlines[0]
        if not delivery.done():
            if deadline > now:
                break
            delivery.set_exception(KafkaTimeoutError("not acknowledged in time"))
            expired += 1
        deadlines.popleft()
    return expired


class _Round:
    """The produce requests of a round: ``done`` once each has been answered."""

    __slots__ = ("done", "pending")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.pending = 0

    def add(self, delivery: asyncio.Future[Any]) -> None:
        self.pending += 1
        delivery.add_done_callback(self._settled)

    def _settled(self, delivery: asyncio.Future[Any]) -> None:
        self.pending -= 1
        if not self.pending and not self.done.done():
            self.done.set_result(None)


def _answer(client: Any, response: Any, records: list[Record[Waiter]]) -> None:
    """A produce response to the waiters of each record: acknowledged, or the partition's
    error (503; a stale leader also asks for new metadata)."""
    unanswered = {record.partition: record for record in records}
    for _, partitions in response.topics:
        for answer in partitions:  # (partition, error_code, ...) in every version
            record = unanswered.pop(answer[0], None)
            if record is None:
                continue
            if answer[1] == 0:
                _acknowledge(record.waiters)
                continue
            error = errors.for_code(answer[1])()
            if error.invalid_metadata:
                client.force_metadata_update()
            _settle_all(record.waiters, error)
    for record in unanswered.values():
        _settle_all(record.waiters, KafkaError(f"no answer for partition {record.partition}"))


def _one_record_a_partition(records: list[Record[Waiter]]) -> list[list[Record[Waiter]]]:
    """``records`` in waves that name each partition once, in order: a produce request
    holds one batch a partition (a broker keeps one of a repeated partition's batches,
    and its answer, by partition, could not tell them apart). A partition has several
    records in a round when its parts outgrow one (size, or parts a record)."""
    waves: list[list[Record[Waiter]]] = []
    seen: dict[int, int] = {}
    for record in records:
        wave = seen.get(record.partition, 0)
        seen[record.partition] = wave + 1
        if wave == len(waves):
            waves.append([])
        waves[wave].append(record)
    return waves


def _acknowledge(waiters: list[Waiter]) -> None:
    """The record's acknowledgement to each callback still waiting for it, counted.

    The callbacks answered 200 and their publish times are counted here, a record
    at a time: a counter increment and a histogram observation per callback were
    1.5 us of its CPU.
    """
    now = time.perf_counter()
    seconds = []
    for waiter, started in waiters:
        if not waiter.done():
            waiter.set_result(None)
            seconds.append(now - started)
    if seconds:
        _ACCEPTED.inc(len(seconds))
        metrics.observe_many(metrics.PUBLISH_SECONDS, seconds)


def _kafka_error(exc: BaseException) -> KafkaError:
    return exc if isinstance(exc, KafkaError) else KafkaError(repr(exc))


def _batch(key: bytes, value: bytes) -> bytes:
    """A record batch (magic 2, uncompressed) of one record, as aiokafka's BatchBuilder
    writes it."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=0,
        batch_size=len(key) + len(value) + 64,  # the first record always goes in
    )
    builder.append(0, timestamp=None, key=key, value=value, headers=[])
    return bytes(builder.build())


def _settle_all(waiters: list[Waiter], error: BaseException) -> None:
    for waiter, _ in waiters:
        if not waiter.done():
            waiter.set_exception(error)
