"""End offsets that are right on Tansu too.

Tansu answers ListOffsets(latest) with (base offset of the last batch + 1),
too low when that batch holds several records; its Fetch responses carry the
right high watermark. So: ask ListOffsets, then fetch at that offset and
read the high watermark from the fetch response.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


async def end_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """Next offset to be written, per partition. ``consumer`` must not be in a group."""
    reported: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    consumer.assign(partitions)
    for tp, offset in reported.items():
        consumer.seek(tp, max(offset - 1, 0))
    result: dict[TopicPartition, int] = {}
    for _ in range(20):
        await consumer.getmany(*partitions, timeout_ms=200)
        for tp in partitions:
            highwater = consumer.highwater(tp)
            if highwater is not None:
                result[tp] = max(highwater, reported[tp])
        if len(result) == len(partitions):
            break
    for tp in partitions:
        result.setdefault(tp, reported[tp])
    return result
