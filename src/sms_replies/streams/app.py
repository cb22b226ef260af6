"""The Faust worker: one agent reassembles raw parts into replies.

Thin on purpose: the handling of each batch of raw events is
:class:`.handler.ReassemblyHandler` (reassembly itself :mod:`.reassembly`, the
expiry index :mod:`.expiry`); this module wires it to a topic, a table and a
producer. At least once: Faust flushes the producer before it commits the raw
offsets, and replies carry a deterministic ``reply_id`` that sinks deduplicate.

Expiry runs in the stream: a leader timer writes an :class:`ExpiryTick` to
every partition of the raw topic; the agent, handling the tick as an event of
that partition, expires the partition's due keys. Table writes thus always
happen in the context of the partition that owns the key.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import faust
from faust.stores.rocksdb import Store as RocksDBStore

from sms_replies.bounds import Bounds
from sms_replies.broker.partitioner import default_partitioner, partition_of
from sms_replies.broker.tansu import adapt_faust_consumer
from sms_replies.erasures import ErasureList
from sms_replies.metrics import exposition
from sms_replies.privacy import key_bytes, pseudonymize_reply
from sms_replies.records import ExpiryTick, Reply
from sms_replies.settings import Settings, local_address
from sms_replies.streams.batch import SendChangelog, TableBatch, in_event
from sms_replies.streams.crash import exit_before_commit, exit_on_send_failure
from sms_replies.streams.drain import fast_delivery
from sms_replies.streams.handler import (
    PublishDeadLetter,
    PublishReply,
    ReassemblyHandler,
    dead_letter_record,
)
from sms_replies.streams.holes import refetch_holes
from sms_replies.streams.outbox import ReplyOutbox
from sms_replies.streams.rocksdb import bound_store, export_memory

#: Raw records handled per batch, and the longest wait to fill one (added latency
#: when traffic is low). See benchmarks/reassembly.py for what batching buys.
BATCH_MAX_EVENTS = 1000
MIB = 1024 * 1024
BATCH_WITHIN_S = 0.02


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """Bounded memory: the block cache is the process's, shared by the table partitions
    and charged for their memtables (streams.rocksdb.BoundedRocksDBOptions)."""
    return {
        "write_buffer_size": settings.worker_rocksdb_write_buffer_mib * MIB,
        "max_write_buffer_number": 2,
        "block_cache_size": settings.worker_rocksdb_cache_mib * MIB,
        "block_cache_compressed_size": settings.worker_rocksdb_cache_mib * MIB,
    }


def faust_settings(settings: Settings) -> dict[str, Any]:
    """Faust configuration for this pipeline (see docs/operations.md)."""
    conf: dict[str, Any] = {
        "broker": f"kafka://{settings.bootstrap}",
        "store": "rocksdb://",
        "datadir": str(settings.worker_state_dir),
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.replication_factor,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        # The worker keeps every record it writes below this (sms_replies.bounds).
        "producer_max_request_size": settings.max_record_bytes,
        # Faster group joins than Faust's defaults (30 s on Tansu, see broker notes).
        "broker_session_timeout": 10,
        "broker_heartbeat_interval": 2,
        "broker_rebalance_timeout": 10,
        # Throughput (benchmarks/reassembly.py): each part costs a changelog write
        # and half a reply, spread over 2 x 8 partitions; with Faust's linger of 0
        # the producer sent about one record per request. 50 ms of linger batches
        # them (Faust flushes the producer before it commits, so acks and
        # at-least-once are unchanged); replies leave at most 50 ms later.
        "producer_linger": 0.05,
        "producer_max_batch_size": 256 * 1024,
        # aiokafka's default partitioning (the same partition for every key) at a
        # third of its CPU: its pure-Python murmur2 of each reply's key was 6 % of
        # the worker's samples (py-spy, mixed load in groups of 33 parts).
        "producer_partitioner": default_partitioner,
        # A deeper buffer keeps the agent fed between fetches.
        "stream_buffer_maxsize": 16384,
        # Health and metrics only, on loopback unless told otherwise: Faust's table
        # and router views would serve the reassembly state (numbers, texts).
        "web_bind": settings.worker_web_host,
        "web_host": local_address(settings.worker_web_host),
        "web_port": settings.worker_port,
        "web_tables_enabled": False,
        "web_router_enabled": False,
        "table_standby_replicas": settings.worker_standby_replicas,
    }
    return conf


class StreamsApp(faust.App):
    """A Faust app whose consumers get the embedded broker's workarounds (broker.tansu)."""

    tansu_bootstrap: str | None = None
    #: Topics whose records are never skipped (streams.holes): the agent's source.
    hole_free_topics: frozenset[str] = frozenset()

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        refetch_holes(consumer, self.hole_free_topics)
        fast_delivery(consumer)
        if self.tansu_bootstrap is not None:
            adapt_faust_consumer(consumer, self.tansu_bootstrap)
        return consumer


def create_app(
    settings: Settings,
    *,
    publish_reply: PublishReply | None = None,
    publish_dead_letter: PublishDeadLetter | None = None,
    publish_changelog: SendChangelog | None = None,
    **overrides: Any,
) -> faust.App:
    """The worker app. ``publish_*`` replace the topic sends (tests), ``overrides`` the conf."""
    app = StreamsApp(settings.worker_id, **{**faust_settings(settings), **overrides})
    if settings.kafka_embedded:
        app.tansu_bootstrap = settings.bootstrap
    topics = settings.topics
    app.hole_free_topics = frozenset({topics.raw})
    partitions = settings.topic_partitions
    raw_topic = app.topic(topics.raw, partitions=partitions)
    dead_letter_topic = app.topic(topics.dead_letter)
    pending = app.Table(
        "pending",
        default=None,
        partitions=partitions,
        key_type=bytes,  # bytes types select Faust's "raw" codec: we encode ourselves
        value_type=bytes,
        help="State of each reassembly key (see streams.reassembly.KeyState).",
        options=rocksdb_options(settings),  # store options: Faust has no app-wide setting
    )
    store = pending.data
    if isinstance(store, RocksDBStore):  # tests may run the worker on a memory store
        bound_store(store)  # one cache for the process's partitions (streams.rocksdb)
        export_memory(store)
    changelog_topic = pending.changelog_topic.get_topic_name()

    async def send_or_exit(
        topic: str, key: bytes, value: bytes | None, partition: int | None = None
    ) -> Any:
        # Straight to aiokafka's producer under Faust's: Topic.send wraps each record
        # in a FutureMessage with callbacks and sensors (about a tenth of the worker's
        # CPU), Faust's Producer.send runs its sensors and settings lookups again
        # (py-spy, mixed load). Faust flushes this same aiokafka producer before it
        # commits, so a record is out before the offsets of what produced it are
        # committed; a lost reply or changelog record (a lost state on take-over)
        # exits the worker first.
        producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
        delivery = await producer.send(topic, value, key=key, partition=partition)
        delivery.add_done_callback(exit_on_send_failure)
        return delivery

    async def replies_partitions() -> Sequence[int]:
        producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
        return sorted(await producer.partitions_for(topics.replies))

    async def send_replies_record(partition: int, key: bytes, value: bytes) -> None:
        await send_or_exit(topics.replies, key, value, partition)

    bounds = Bounds.of(settings)
    # A batch's replies, one record per partition of the replies topic at its end.
    outbox = ReplyOutbox(
        max_bytes=bounds.max_value_bytes, partitions=replies_partitions, send=send_replies_record
    )

    async def send_changelog(partition: int, key: bytes, value: bytes | None) -> Any:
        return await send_or_exit(changelog_topic, key, value, partition)

    async def send_dead_letter(value: bytes, error: str) -> None:
        envelope = dead_letter_record(
            "reassembly", value, error, bounds.max_value_bytes, topic=topics.raw
        )
        await dead_letter_topic.send(value=envelope)

    pseudonymize_key = (
        settings.pseudonymize_key.get_secret_value().encode() if settings.pseudonymize_key else None
    )
    base_publish = publish_reply or outbox.add

    async def publish(reply: Reply) -> None:
        # The one place replies leave the worker: with a key, no number in clear
        # reaches the replies topic or any store.
        await base_publish(pseudonymize_reply(reply, pseudonymize_key))

    changelog = publish_changelog or send_changelog

    def scan_table(event: Any) -> dict[int, list[tuple[bytes, bytes]]]:
        # Every partition this worker holds, in one pass over the table.
        entries: dict[int, list[tuple[bytes, bytes]]] = {}
        with in_event(event):
            for key, value in pending.items():
                entries.setdefault(partition_of(key, partitions), []).append((key, value))
        return entries

    handler = ReassemblyHandler(
        timeout_ms=int(settings.reassembly_timeout * 1000),
        horizon_ms=int(settings.dedup_horizon * 1000),
        publish=publish,
        dead_letter=publish_dead_letter or send_dead_letter,
        scan_table=scan_table,
        bounds=bounds,
        erasures=ErasureList(settings.data_dir, key_bytes(settings.pseudonymize_key)),
        flush_replies=None if publish_reply else outbox.flush,
    )

    @app.agent(raw_topic, name="reassemble")
    async def reassemble(stream: faust.StreamT[bytes]) -> None:
        # A batch at a time, acked only once handled: its replies and changelog
        # records are sent by then, and Faust flushes its producer before it
        # commits. (`take_events` would ack a batch even when its handling fails
        # or is cancelled half-way.) A batch never acked is read again.
        batches = cast(faust.Stream[bytes], stream).noack_take
        async for taken in batches(BATCH_MAX_EVENTS, within=BATCH_WITHIN_S):
            events = cast(list[Any], taken)  # noack_take yields the events themselves
            try:
                await handler.handle_batch(TableBatch(pending, changelog), events)
            except Exception:
                # Records are handled one by one above (bad ones go to the dead-letter
                # topic); what escapes is the store or the producer failing. Crash-only:
                # nothing of this batch is acked, the restarted worker reads it again.
                exit_before_commit("batch not handled", exc_info=True)
            for event in events:
                await stream.ack(event)

    @app.timer(settings.expiry_tick_interval, on_leader=True)  # type: ignore[untyped-decorator]
    async def send_expiry_ticks() -> None:
        tick = ExpiryTick(now_ms=time.time_ns() // 1_000_000).encode()
        for partition in range(partitions):
            await raw_topic.send(value=tick, partition=partition)

    async def forget_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[Any] = args[0] if args else kwargs.get("revoked", set())
        handler.forget(tp.partition for tp in revoked if tp.topic == topics.raw)

    app.on_partitions_revoked.connect(forget_revoked)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        body, headers = exposition()
        return web.bytes(body, headers=headers)

    @app.page("/healthz")
    async def health_page(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def ready_page(web: Any, request: Any) -> Any:
        # Ready once the group gave this process its partitions (possibly none,
        # with more processes than partitions) and their tables are recovered.
        recovery = cast(Any, app.tables).recovery  # TableManager's, not in TableManagerT
        ready = recovery.completed.is_set() and not app.rebalancing
        actives = app.assignor.assigned_actives()
        owned = sorted(tp.partition for tp in actives if tp.topic == topics.raw)
        body = {"status": "ready" if ready else "starting", "partitions": owned}
        return web.json(body, status=200 if ready else 503)

    return app
