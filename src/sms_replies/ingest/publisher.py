"""Publish raw callbacks to Kafka; an answer only once the broker acknowledged (acks=all).

Callbacks published in the same moment (the same turn of the event loop, or
within ``group_wait`` seconds) for the same partition travel as one record
(:mod:`.grouping`); each is answered once that record is acknowledged.

Driver errors become :class:`BrokerUnavailable` here. The producer is started
lazily and again after a failure, so the ingress comes up before the broker
and recovers from an outage without a restart.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from sms_replies import metrics
from sms_replies.broker.partitioner import default_partitioner, partition_of
from sms_replies.broker.probe import PROBE_TIMEOUT_S, metadata_round_trip
from sms_replies.errors import BrokerUnavailable
from sms_replies.grouping import PartitionGroups, Record
from sms_replies.records import RawPart, Topics

log = logging.getLogger(__name__)
_PUBLISH_SECONDS = metrics.PUBLISH_SECONDS.observe


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
        self._producer: AIOKafkaProducer | None = None
        self._raw_partitions: tuple[int, ...] = ()
        self._groups: PartitionGroups[asyncio.Future[None]] = PartitionGroups(max_record_bytes)
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
                    request_timeout_ms=int(self.timeout * 1000),
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
        self._groups.add(partition, key, part.encode(), acknowledged)
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
        _PUBLISH_SECONDS(time.perf_counter() - started)

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
        try:
            while records := self._groups.drain():
                acknowledged = _Round(asyncio.get_running_loop().create_future())
                for record in records:
                    delivery = await self._send_record(record)
                    if delivery is not None:
                        acknowledged.add(delivery)
                if acknowledged.pending:
                    # Bounded by the watchdog (no asyncio.wait and its timer a round);
                    # aiokafka fails a batch after its request timeout anyway.
                    self._deadlines.append((time.perf_counter() + self.timeout, acknowledged.done))
                    with contextlib.suppress(KafkaError):
                        await acknowledged.done
        finally:
            self._sending = None

    async def _send_record(
        self, record: Record[asyncio.Future[None]]
    ) -> asyncio.Future[Any] | None:
        try:
            producer = self._producer or await self.connect()
            # The record as a batch of its own (one a partition a round): none of
            # send()'s per-message work (serialisation, partitioner, a future and
            # RecordMetadata per message, the accumulator's append loop).
            batch = producer.create_batch()
            batch.append(key=record.key, value=record.value, timestamp=None)
            batch.close()
            # Bounded by the producer's request timeout (metadata, a full buffer).
            delivery: asyncio.Future[Any] = await producer.send_batch(
                batch, self.topics.raw, partition=record.partition
            )
        except Exception as exc:  # every waiter answers 503; the sender goes on
            log.warning(
                "raw record not sent (%d callbacks answer 503): %r", len(record.waiters), exc
            )
            _settle_all(
                record.waiters, exc if isinstance(exc, KafkaError) else KafkaError(repr(exc))
            )
            return None
        delivery.add_done_callback(functools.partial(_settle, record.waiters))
        return delivery

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
        _PUBLISH_SECONDS(time.perf_counter() - started)

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
    """The deliveries of a round: ``done`` once each has settled."""

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


def _settle(waiters: list[asyncio.Future[None]], delivery: asyncio.Future[Any]) -> None:
    """The record's acknowledgement (or failure) to each callback still waiting for it."""
    if delivery.cancelled():
        _settle_all(waiters, KafkaTimeoutError("delivery cancelled"))
    elif (error := delivery.exception()) is not None:
        _settle_all(waiters, error)
    else:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _settle_all(waiters: list[asyncio.Future[None]], error: BaseException) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(error)
