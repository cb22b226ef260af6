"""The ingress publisher sends a round of records at a time (ingest.publisher).

A fake producer stands for aiokafka: each record a batch of its own, acknowledged
(or failed) when the test says so.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from sms_replies.errors import BrokerUnavailable
from sms_replies.ingest.publisher import Publisher, expire_deliveries
from sms_replies.records import RawGroup, RawPart, Topics, decode_raw


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.closed = False

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object:
        assert not self.closed
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, FakeBatch, asyncio.Future[Any]]] = []
        self.refuse: Exception | None = None

    async def stop(self) -> None:
        return None

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        if self.refuse is not None:
            raise self.refuse
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, batch, delivery))
        return delivery


def part(n: int) -> RawPart:
    return RawPart(
        channel="long_number",
        sender=f"+3361234{n:04d}",
        recipient="+33756781234",
        text="Oui",
        provider_message_id=f"m-{n}",
        message_type="text",
        received_at_ms=1_700_000_000_000,
    )


def publisher(producer: FakeProducer, partitions: int = 1) -> Publisher:
    publisher = Publisher("unused:9092", Topics.with_prefix("unit"), timeout=5)
    publisher._producer = producer  # type: ignore[assignment]
    publisher._raw_partitions = tuple(range(partitions))
    return publisher


def senders(batch: FakeBatch) -> list[str]:
    ((_, value),) = batch.records
    record = decode_raw(value)
    parts = record.parts if isinstance(record, RawGroup) else (record,)
    return [p.sender for p in parts]  # type: ignore[union-attr]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_callbacks_published_while_a_round_is_in_flight_go_in_the_next_round() -> None:
    producer = FakeProducer()
    pub = publisher(producer)
    first = [asyncio.create_task(pub.publish(part(n))) for n in (1, 2)]
    await settle()
    assert len(producer.sent) == 1  # both in one record, one batch
    assert senders(producer.sent[0][2]) == ["+33612340001", "+33612340002"]
    later = [asyncio.create_task(pub.publish(part(n))) for n in (3, 4, 5)]
    await settle()
    assert len(producer.sent) == 1  # held until the round in flight is acknowledged
    assert not any(t.done() for t in first + later)
    producer.sent[0][3].set_result(None)
    await settle()
    assert all(t.done() and t.exception() is None for t in first)
    assert not any(t.done() for t in later)  # the next round is sent, not yet acknowledged
    assert len(producer.sent) == 2
    assert senders(producer.sent[1][2]) == ["+33612340003", "+33612340004", "+33612340005"]
    producer.sent[1][3].set_result(None)
    await asyncio.gather(*later)
    await pub.stop()


async def test_each_partition_has_its_batch_in_a_round() -> None:
    producer = FakeProducer()
    pub = publisher(producer, partitions=8)
    tasks = [asyncio.create_task(pub.publish(part(n))) for n in range(40)]
    await settle()
    partitions = [p for _, p, _, _ in producer.sent]
    assert sorted(partitions) == sorted(set(partitions))  # one batch a partition
    assert sum(len(senders(b)) for _, _, b, _ in producer.sent) == 40
    for *_, delivery in producer.sent:
        delivery.set_result(None)
    await asyncio.gather(*tasks)
    await pub.stop()


async def test_a_failed_round_fails_its_callbacks_and_the_next_round_goes() -> None:
    producer = FakeProducer()
    pub = publisher(producer)
    first = asyncio.create_task(pub.publish(part(1)))
    await settle()
    second = asyncio.create_task(pub.publish(part(2)))
    await settle()
    producer.sent[0][3].set_exception(KafkaTimeoutError("no ack"))
    with pytest.raises(BrokerUnavailable):
        await first
    await settle()
    assert len(producer.sent) == 2
    producer.sent[1][3].set_result(None)
    await second
    await pub.stop()


async def test_a_record_the_producer_refuses_answers_its_callbacks_unavailable() -> None:
    producer = FakeProducer()
    producer.refuse = KafkaTimeoutError("buffer full")
    pub = publisher(producer)
    with pytest.raises(BrokerUnavailable):
        await pub.publish(part(1))
    producer.refuse = None
    task = asyncio.create_task(pub.publish(part(2)))
    await settle()
    producer.sent[0][3].set_result(None)
    await task
    await pub.stop()


async def test_a_round_never_acknowledged_is_given_up_at_its_deadline() -> None:
    producer = FakeProducer()
    pub = publisher(producer)
    first = asyncio.create_task(pub.publish(part(1)))
    await settle()
    second = asyncio.create_task(pub.publish(part(2)))
    await settle()
    assert len(producer.sent) == 1  # the round in flight holds the next one
    # The watchdog's pass after the deadline: the callback answers 503, the round
    # is given up (its delivery may still come) and the next round goes.
    (first_due, _), (round_due, _), (second_due, _) = pub._deadlines
    assert first_due <= round_due < second_due
    expire_deliveries(pub._deadlines, round_due)
    with pytest.raises(BrokerUnavailable):
        await first
    await settle()
    assert len(producer.sent) == 2
    producer.sent[1][3].set_result(None)
    await second
    producer.sent[0][3].set_result(None)  # late: nobody waits for it any more
    await pub.stop()
