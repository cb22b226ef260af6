"""The ingress publisher sends a round of records at a time (ingest.publisher).

A fake client stands for aiokafka's: it keeps each produce request (one a round
and leader, a batch a record) and answers it (or fails it) when the test says so.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatch

from sms_replies import metrics
from sms_replies.errors import BrokerUnavailable
from sms_replies.ingest.publisher import Publisher, expire_deliveries
from sms_replies.records import RawGroup, RawPart, Topics, decode_raw


class FakeResponse:
    def __init__(self, topics: list[tuple[str, list[tuple[int, int, int]]]]) -> None:
        self.topics = topics


class FakeCluster:
    def __init__(self) -> None:
        self.leaders: dict[int, int | None] = {}

    def leader_for_partition(self, tp: TopicPartition) -> int | None:
        return self.leaders.get(tp.partition, 0)


class FakeClient:
    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.sent: list[tuple[int, ProduceRequest, asyncio.Future[FakeResponse]]] = []
        self.refuse: Exception | None = None
        self.metadata_updates = 0

    def force_metadata_update(self) -> None:
        self.metadata_updates += 1

    async def send(self, node_id: int, request: ProduceRequest) -> FakeResponse:
        if self.refuse is not None:
            raise self.refuse
        answer: asyncio.Future[FakeResponse] = asyncio.get_running_loop().create_future()
        self.sent.append((node_id, request, answer))
        return await answer


class FakeProducer:
    def __init__(self) -> None:
        self.client = FakeClient()

    async def stop(self) -> None:
        return None

    @property
    def sent(self) -> list[tuple[int, ProduceRequest, asyncio.Future[FakeResponse]]]:
        return self.client.sent


def batches(request: ProduceRequest) -> dict[int, bytes]:
    """The request's record batches by partition (one topic: the raw one)."""
    ((_, partitions),) = request._topics
    return dict(partitions)


def acknowledge(
    request: ProduceRequest, answer: asyncio.Future[Any], errors: dict[int, int] | None = None
) -> None:
    errors = errors or {}
    ((topic, partitions),) = request._topics
    answer.set_result(FakeResponse([(topic, [(p, errors.get(p, 0), 0) for p, _ in partitions])]))


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


def senders(batch: bytes) -> list[str]:
    (record,) = list(DefaultRecordBatch(batch))
    value = decode_raw(record.value)
    parts = value.parts if isinstance(value, RawGroup) else (value,)
    return [p.sender for p in parts]  # type: ignore[union-attr]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_callbacks_published_while_a_round_is_in_flight_go_in_the_next_round() -> None:
    producer = FakeProducer()
    pub = publisher(producer)
    first = [asyncio.create_task(pub.publish(part(n))) for n in (1, 2)]
    await settle()
    assert len(producer.sent) == 1  # both in one record, one batch, one request
    _, request, answer = producer.sent[0]
    assert request.required_acks == -1  # acks=all
    assert senders(batches(request)[0]) == ["+33612340001", "+33612340002"]
    later = [asyncio.create_task(pub.publish(part(n))) for n in (3, 4, 5)]
    await settle()
    assert len(producer.sent) == 1  # held until the round in flight is acknowledged
    assert not any(t.done() for t in first + later)
    acknowledge(request, answer)
    await settle()
    assert all(t.done() and t.exception() is None for t in first)
    assert not any(t.done() for t in later)  # the next round is sent, not yet acknowledged
    assert len(producer.sent) == 2
    _, request, answer = producer.sent[1]
    assert senders(batches(request)[0]) == ["+33612340003", "+33612340004", "+33612340005"]
    acknowledge(request, answer)
    await asyncio.gather(*later)
    await pub.stop()


async def test_each_partition_has_its_batch_in_a_round() -> None:
    producer = FakeProducer()
    pub = publisher(producer, partitions=8)
    tasks = [asyncio.create_task(pub.publish(part(n))) for n in range(40)]
    await settle()
    ((_, request, answer),) = producer.sent  # one request: one leader
    ((topic, partitions),) = request._topics
    assert topic == pub.topics.raw
    numbers = [p for p, _ in partitions]
    assert sorted(numbers) == sorted(set(numbers))  # one batch a partition
    assert sum(len(senders(b)) for b in batches(request).values()) == 40
    acknowledge(request, answer)
    await asyncio.gather(*tasks)
    await pub.stop()


async def test_each_leader_has_its_request_in_a_round() -> None:
    producer = FakeProducer()
    producer.client.cluster.leaders = {p: p % 2 for p in range(8)}
    pub = publisher(producer, partitions=8)
    tasks = [asyncio.create_task(pub.publish(part(n))) for n in range(40)]
    await settle()
    assert sorted(node for node, _, _ in producer.sent) == [0, 1]
    for node, request, answer in producer.sent:
        assert all(p % 2 == node for p in batches(request))
        acknowledge(request, answer)
    await asyncio.gather(*tasks)
    await pub.stop()


def accepted_and_timed() -> tuple[float, float]:
    accepted = metrics.CALLBACKS.labels("accepted")._value.get()
    ((histogram,),) = [list(metrics.PUBLISH_SECONDS.collect())]
    (count,) = [s.value for s in histogram.samples if s.name.endswith("_count")]
    return accepted, count


async def forty_with_one_partition_refused(
    producer: FakeProducer, pub: Publisher
) -> tuple[list[asyncio.Task[None]], ProduceRequest, int]:
    """40 callbacks over 8 partitions in one request, answered with an error for one
    partition; the callbacks' tasks (all done), the request, the refused partition."""
    tasks = [asyncio.create_task(pub.publish(part(n))) for n in range(40)]
    await settle()
    ((_, request, answer),) = producer.sent
    refused = min(batches(request))
    acknowledge(request, answer, errors={refused: NotLeaderForPartitionError.errno})
    await asyncio.wait(tasks)
    return tasks, request, refused


async def test_acknowledged_callbacks_are_counted_accepted_and_timed_a_record_at_a_time() -> None:
    producer = FakeProducer()
    pub = publisher(producer, partitions=8)
    before = accepted_and_timed()
    tasks, _, _ = await forty_with_one_partition_refused(producer, pub)
    answered = sum(1 for t in tasks if t.exception() is None)
    assert 0 < answered < 40
    after = accepted_and_timed()
    assert after == (before[0] + answered, before[1] + answered)  # the 503s are not
    await pub.stop()


async def test_a_failed_round_fails_its_callbacks_and_the_next_round_goes() -> None:
    producer = FakeProducer()
    pub = publisher(producer)
    first = asyncio.create_task(pub.publish(part(1)))
    await settle()
    second = asyncio.create_task(pub.publish(part(2)))
    await settle()
    producer.sent[0][2].set_exception(KafkaTimeoutError("no ack"))
    with pytest.raises(BrokerUnavailable):
        await first
    await settle()
    assert len(producer.sent) == 2
    acknowledge(*producer.sent[1][1:])
    await second
    await pub.stop()


async def test_a_partition_answered_with_an_error_fails_its_callbacks_only() -> None:
    producer = FakeProducer()
    pub = publisher(producer, partitions=8)
    tasks, request, refused = await forty_with_one_partition_refused(producer, pub)
    failed = {n for n, t in enumerate(tasks) if t.exception() is not None}
    assert failed
    assert len(failed) < 40
    assert all(isinstance(tasks[n].exception(), BrokerUnavailable) for n in failed)
    assert set(senders(batches(request)[refused])) == {part(n).sender for n in failed}
    assert producer.client.metadata_updates == 1  # a stale leader: ask again
    await pub.stop()


async def test_a_partition_without_a_leader_answers_its_callbacks_unavailable() -> None:
    producer = FakeProducer()
    producer.client.cluster.leaders = {0: -1}
    pub = publisher(producer)
    with pytest.raises(BrokerUnavailable):
        await pub.publish(part(1))
    assert not producer.sent
    assert producer.client.metadata_updates == 1
    producer.client.cluster.leaders = {}
    task = asyncio.create_task(pub.publish(part(2)))
    await settle()
    acknowledge(*producer.sent[0][1:])
    await task
    await pub.stop()


async def test_a_request_the_client_cannot_send_answers_its_callbacks_unavailable() -> None:
    producer = FakeProducer()
    producer.client.refuse = KafkaConnectionError("broker gone")
    pub = publisher(producer)
    with pytest.raises(BrokerUnavailable):
        await pub.publish(part(1))
    assert producer.client.metadata_updates == 1  # the connection's error: metadata again
    producer.client.refuse = None
    task = asyncio.create_task(pub.publish(part(2)))
    await settle()
    acknowledge(*producer.sent[0][1:])
    await task
    await pub.stop()


async def test_a_request_that_cannot_be_built_answers_its_callbacks_unavailable_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(key: bytes, value: bytes) -> bytes:
        raise ValueError("no batch")

    producer = FakeProducer()
    pub = publisher(producer)
    with monkeypatch.context() as patched:
        patched.setattr("sms_replies.ingest.publisher._batch", broken)
        task = asyncio.create_task(pub.publish(part(1)))
        await settle()
        assert task.done()  # not left for the watchdog
        with pytest.raises(BrokerUnavailable):
            await task
    task = asyncio.create_task(pub.publish(part(2)))
    await settle()
    acknowledge(*producer.sent[0][1:])
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
    # is given up (its answer may still come) and the next round goes.
    (first_due, _), (round_due, _), (second_due, _) = pub._deadlines
    assert first_due <= round_due < second_due
    expire_deliveries(pub._deadlines, round_due)
    with pytest.raises(BrokerUnavailable):
        await first
    await settle()
    assert len(producer.sent) == 2
    acknowledge(*producer.sent[1][1:])
    await second
    acknowledge(*producer.sent[0][1:])  # late: nobody waits for it any more
    await settle()
    await pub.stop()


async def test_records_of_one_partition_in_a_round_go_in_requests_of_their_own() -> None:
    # More parts for a partition than one record holds make several records for it
    # in a round; a produce request names a partition once (a broker keeps one batch
    # of a repeated partition, and its answer could not tell the records apart).
    producer = FakeProducer()
    pub = Publisher("unused:9092", Topics.with_prefix("unit"), timeout=5, max_record_bytes=2000)
    pub._producer = producer  # type: ignore[assignment]
    pub._raw_partitions = (0,)
    first = asyncio.create_task(pub.publish(part(0)))
    await settle()
    held = [asyncio.create_task(pub.publish(part(n))) for n in range(1, 201)]
    await settle()
    acknowledge(*producer.sent[0][1:])
    await first
    await settle()
    requests = producer.sent[1:]
    assert len(requests) > 1  # 200 parts are more than one record of 2,000 bytes holds
    for _, request, _ in requests:
        ((_, partitions),) = request._topics
        assert len(partitions) == len({p for p, _ in partitions})
    carried = [s for _, request, _ in requests for s in senders(batches(request)[0])]
    assert sorted(carried) == sorted(part(n).sender for n in range(1, 201))
    assert not any(t.done() for t in held)
    for _, request, answer in requests[:-1]:
        acknowledge(request, answer)
    await settle()
    waiting = [t for t in held if not t.done()]
    assert waiting
    assert len(waiting) == len(senders(batches(requests[-1][1])[0]))
    acknowledge(*requests[-1][1:])
    await asyncio.gather(*held)
    await pub.stop()
