"""The Faust worker: one agent reassembles raw parts into replies.

Thin on purpose: decoding and reassembly are :mod:`.reassembly`, the expiry
index :mod:`.expiry`; this module wires them to a topic, a table and a
producer. At least once: Faust flushes the producer before it commits the raw
offsets, and replies carry a deterministic ``reply_id`` that sinks deduplicate.

Expiry runs in the stream: a leader timer writes an :class:`ExpiryTick` to
every partition of the raw topic; the agent, handling the tick as an event of
that partition, expires the partition's due keys. Table writes thus always
happen in the context of the partition that owns the key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sms_replies import metrics
from sms_replies.contract import ExpiryTick, RawPart, Reply, decode_raw
from sms_replies.privacy import pseudonymize_reply
from sms_replies.settings import Settings
from sms_replies.streams.expiry import ExpiryIndex, partition_of
from sms_replies.streams.reassembly import PendingMessage, Step, accept, expire_due, next_deadline

log = logging.getLogger(__name__)

PublishReply = Callable[[Reply], Awaitable[None]]
PublishDeadLetter = Callable[[bytes, str], Awaitable[None]]


def faust_settings(settings: Settings) -> dict[str, Any]:
    """Faust configuration for this pipeline (see docs/operations.md)."""
    conf: dict[str, Any] = {
        "broker": f"kafka://{settings.bootstrap}",
        "store": "rocksdb://",
        "datadir": str(settings.data_dir / "worker"),
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.replication_factor,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        # Faster group joins than Faust's defaults (30 s on Tansu, see broker notes).
        "broker_session_timeout": 10,
        "broker_heartbeat_interval": 2,
        "broker_rebalance_timeout": 10,
        "web_host": settings.http_host,
        "web_port": settings.worker_web_port,
    }
    if settings.kafka_embedded:
        # Tansu reports a wrong end offset for multi-record batches, which breaks
        # changelog recovery; one record per batch keeps it right.
        conf["producer_max_batch_size"] = 1
    return conf


def create_app(
    settings: Settings,
    *,
    publish_reply: PublishReply | None = None,
    publish_dead_letter: PublishDeadLetter | None = None,
    **overrides: Any,
) -> faust.App:
    """The worker app. ``publish_*`` replace the topic sends (tests), ``overrides`` the conf."""
    app = faust.App(settings.worker_id, **{**faust_settings(settings), **overrides})
    topics = settings.topics
    partitions = settings.topic_partitions
    timeout_ms = int(settings.reassembly_timeout * 1000)
    horizon_ms = int(settings.dedup_horizon * 1000)
    raw_topic = app.topic(topics.raw, partitions=partitions)
    replies_topic = app.topic(topics.replies)
    dead_letter_topic = app.topic(topics.dead_letter)
    pending = app.Table(
        "pending",
        default=None,
        partitions=partitions,
        key_type=bytes,  # bytes types select Faust's "raw" codec: we encode ourselves
        value_type=bytes,
        help="State of each reassembly key (see streams.reassembly.PendingMessage).",
    )
    index = ExpiryIndex()

    async def send_reply(reply: Reply) -> None:
        await replies_topic.send(key=reply.reply_id.encode(), value=reply.encode())

    async def send_dead_letter(value: bytes, error: str) -> None:
        record = value.decode("utf-8", "replace")
        envelope = {"stage": "reassembly", "error": error, "record": record}
        await dead_letter_topic.send(value=orjson.dumps(envelope))

    pseudonymize_key = (
        settings.pseudonymize_key.get_secret_value().encode() if settings.pseudonymize_key else None
    )
    base_publish = publish_reply or send_reply

    async def publish(reply: Reply) -> None:
        # The one place replies leave the worker: with a key, no number in clear
        # reaches the replies topic or any store.
        await base_publish(pseudonymize_reply(reply, pseudonymize_key))

    dead_letter = publish_dead_letter or send_dead_letter

    def deadline(state: PendingMessage) -> int:
        return next_deadline(state, timeout_ms=timeout_ms, horizon_ms=horizon_ms)

    async def apply(partition: int, key: bytes, step: Step) -> None:
        if step.pending is None:
            pending.pop(key, None)
        else:
            pending[key] = step.pending.encode()
            index.schedule(partition, key, deadline(step.pending))
        for reply in step.replies:
            await publish(reply)
            metrics.REPLIES_EMITTED.labels(str(reply.complete).lower()).inc()

    async def on_part(partition: int, part: RawPart) -> None:
        if part.concat is None:
            for reply in accept(None, part).replies:
                await publish(reply)
                metrics.REPLIES_EMITTED.labels("true").inc()
            metrics.PARTS_PROCESSED.labels("single").inc()
            return
        key = part.partition_key
        held = pending.get(key)
        step = accept(PendingMessage.decode(held) if held else None, part)
        if not step.duplicate:
            await apply(partition, key, step)
        metrics.PARTS_PROCESSED.labels("duplicate" if step.duplicate else "part").inc()

    async def on_tick(partition: int, tick: ExpiryTick) -> None:
        if not index.is_indexed(partition):
            index.rebuild(
                partition,
                (
                    (key, deadline(PendingMessage.decode(value)))
                    for key, value in pending.items()
                    if value and partition_of(key, partitions) == partition
                ),
            )
            log.info("expiry index of partition %d: %d keys", partition, len(index))
        for key in index.pop_due(partition, tick.now_ms):
            held = pending.get(key)
            if held:
                state = PendingMessage.decode(held)
                await apply(
                    partition,
                    key,
                    expire_due(state, tick.now_ms, timeout_ms=timeout_ms, horizon_ms=horizon_ms),
                )
        metrics.PENDING_MESSAGES.set(len(index))

    @app.agent(raw_topic, name="reassemble")
    async def reassemble(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            value: bytes = event.value
            partition: int = event.message.partition
            try:
                record = decode_raw(value)
                if isinstance(record, ExpiryTick):
                    await on_tick(partition, record)
                else:
                    await on_part(partition, record)
            except Exception as exc:
                # A record we cannot process is data for the dead-letter topic;
                # crashing the agent would skip it silently and stall the stream.
                log.exception("raw record sent to the dead-letter topic")
                await dead_letter(value, f"{type(exc).__name__}: {exc}")
                metrics.PARTS_PROCESSED.labels("dead_letter").inc()

    @app.timer(settings.expiry_tick_interval, on_leader=True)  # type: ignore[untyped-decorator]
    async def send_expiry_ticks() -> None:
        tick = ExpiryTick(now_ms=time.time_ns() // 1_000_000).encode()
        for partition in range(partitions):
            await raw_topic.send(value=tick, partition=partition)

    async def forget_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[Any] = args[0] if args else kwargs.get("revoked", set())
        index.forget(tp.partition for tp in revoked if tp.topic == topics.raw)

    app.on_partitions_revoked.connect(forget_revoked)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST)

    @app.page("/healthz")
    async def health_page(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    return app
