"""Publish raw callbacks to Kafka; an answer only once the broker acknowledged (acks=all).

Driver errors become :class:`BrokerUnavailable` here. The producer is started
lazily and again after a failure, so the ingress comes up before the broker
and recovers from an outage without a restart.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from sms_replies import metrics
from sms_replies.broker.partitioner import default_partitioner
from sms_replies.broker.probe import PROBE_TIMEOUT_S, metadata_round_trip
from sms_replies.errors import BrokerUnavailable
from sms_replies.records import RawPart, Topics

log = logging.getLogger(__name__)
_PUBLISH_SECONDS = metrics.PUBLISH_SECONDS.observe


class Publisher:
    def __init__(self, bootstrap: str, topics: Topics, *, timeout: float) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.timeout = timeout
        self._producer: AIOKafkaProducer | None = None
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
        """Write one raw part; returns once the broker acknowledged it."""
        await self._send(self.topics.raw, part.encode(), key=part.partition_key)

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
        """Flush and close. Idempotent."""
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
