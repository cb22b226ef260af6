"""The worker writes a batch's replies as one record per partition of the replies topic
(records.ReplyGroup, streams.outbox); the sinks write each reply once."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from sms_replies.broker.admin import ensure_topics
from sms_replies.records import RawGroup, RawPart, Reply, decode_replies
from sms_replies.settings import Settings
from tests.integration.conftest import Processes, wait_for_rows

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
async def test_a_batchs_replies_travel_as_one_record_per_partition(
    settings: Settings, processes: Processes
) -> None:
    await ensure_topics(settings.bootstrap, settings.topics, partitions=settings.topic_partitions)
    parts = [
        RawPart(
            channel="long_number",
            sender=f"+3361234{n:04d}",
            recipient="+33756781234",
            text=f"Oui {n}",
            provider_message_id=f"m-{n}",
            message_type="text",
            received_at_ms=1_764_000_000_000 + n,
        )
        for n in range(60)
    ]
    # All on one raw partition, in one record: one event, one batch of the worker.
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topics.raw, RawGroup(tuple(parts)).encode(), key=parts[0].partition_key
        )
    finally:
        await producer.stop()
    processes.start("worker")
    processes.start("sinks")
    rows = await wait_for_rows(settings.duckdb_path, len(parts), timeout=120)
    assert sorted(r["text"] for r in rows) == sorted(p.text for p in parts)
    assert len({r["reply_id"] for r in rows}) == len(parts)

    records = await _records(settings, len(parts))
    replies = [(partition, reply) for partition, value in records for reply in value]
    assert sorted(r.text for _, r in replies) == sorted(p.text for p in parts)
    # Fewer records than replies, each reply on the partition its key gives alone.
    assert len(records) < len(parts)
    count = settings.topic_partitions
    assert all(
        partition == (aiokafka_murmur2(r.reply_id.encode()) & 0x7FFFFFFF) % count
        for partition, r in replies
    )


async def _records(settings: Settings, replies: int) -> list[tuple[int, list[Reply]]]:
    """(partition, replies) of the replies topic's records until they hold ``replies``."""
    consumer = AIOKafkaConsumer(
        settings.topics.replies,
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    records: list[tuple[int, list[Reply]]] = []
    try:
        async with asyncio.timeout(30):
            while sum(len(r) for _, r in records) < replies:
                batch = await consumer.getmany(timeout_ms=200)
                records += [
                    (r.partition, decode_replies(r.value))
                    for rs in batch.values()
                    for r in rs
                    if r.value
                ]
    finally:
        await consumer.stop()
    return records
