"""Every workaround for the embedded Tansu broker, in one place.

Tansu (the embedded broker ``run`` starts, see shared notes broker.md) differs
from Kafka in two ways that matter here. Each workaround below says why it
exists and what to do on a real Kafka cluster:

1. **End offsets** (:func:`end_offsets`). Tansu answers ListOffsets(latest)
   with the base offset of the last batch + 1, too low once a batch holds
   several records; its Fetch responses carry the right high watermark. Used by
   the worker's changelog recovery (:func:`adapt_faust_consumer`), the re-seed
   of worker state, the lag gauge and the tests. Right on Kafka too (one extra
   fetch); on Kafka alone, ``consumer.end_offsets`` would do.
2. **Fetch wait** (:data:`FETCH_MAX_WAIT_MS`). Tansu answers a fetch over
   several partitions only after ``fetch_max_wait_ms`` (measured ~480 ms of a
   500 ms wait) when the new record is on another partition than the first:
   a latency floor on every reply. The worker's consumer (Faust hard-codes
   1500 ms, :func:`adapt_faust_consumer`) and the sinks' consumers
   (:func:`sink_fetch_max_wait_ms`) wait 50 ms instead. On Kafka: delete, the
   defaults answer as soon as data arrives.

Only applied with ``SMS_REPLIES_KAFKA_EMBEDDED=true`` (set by ``run``), except
:func:`end_offsets`, which is right on both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition

#: Longest wait of a fetch on Tansu (see 2. above); Kafka clients' default is 500.
FETCH_MAX_WAIT_MS: Final = 50
KAFKA_FETCH_MAX_WAIT_MS: Final = 500


async def end_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """Next offset to be written, per partition. ``consumer`` must not be in a group.

    Asks ListOffsets, then fetches at that offset and reads the high watermark
    from the fetch response (see 1. above).
    """
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


def sink_fetch_max_wait_ms(embedded: bool) -> int:
    """The sinks' consumers' fetch wait: short on Tansu (see 2. above)."""
    return FETCH_MAX_WAIT_MS if embedded else KAFKA_FETCH_MAX_WAIT_MS


def adapt_faust_consumer(consumer: Any, bootstrap: str) -> None:
    """Patch one Faust consumer for Tansu: right end offsets, short fetch wait.

    Without the first, changelog recovery stops short (memory store: lost state)
    or refuses the RocksDB offsets (ConsistencyError). Faust has no hook for
    either: the methods are replaced on this one instance. Cheaper than the old
    workaround, one record per produced batch, which capped the changelog (and so
    the whole stage) at a few thousand writes/s.
    """
    consumer.highwaters = _fetched_highwaters(bootstrap)
    thread = consumer._thread
    create = thread._create_worker_consumer

    def create_worker_consumer(transport: Any) -> Any:
        client = create(transport)
        client._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start()
        return client

    thread._create_worker_consumer = create_worker_consumer


def _fetched_highwaters(bootstrap: str) -> Callable[..., Awaitable[dict[Any, int]]]:
    async def highwaters(*tps: Any) -> dict[Any, int]:
        # A consumer outside any group: end_offsets() assigns and seeks.
        probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await probe.start()
        try:
            ends = await end_offsets(probe, [TopicPartition(tp.topic, tp.partition) for tp in tps])
        finally:
            await probe.stop()
        return {tp: ends[TopicPartition(tp.topic, tp.partition)] for tp in tps}

    return highwaters
