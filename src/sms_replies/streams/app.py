"""The Faust worker: one agent reassembles raw parts into replies.

Thin on purpose: decoding and reassembly are :mod:`.reassembly`; this module
wires them to a topic, a table and a producer. At least once: Faust flushes
the producer before it commits the raw offsets, and replies carry a
deterministic ``reply_id`` that the sinks deduplicate on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import faust
from sms_replies import metrics
from sms_replies.contract import RawPart, Reply
from sms_replies.settings import Settings
from sms_replies.streams.reassembly import PendingMessage, accept

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
    raw_topic = app.topic(topics.raw, partitions=settings.topic_partitions)
    replies_topic = app.topic(topics.replies)
    dead_letter_topic = app.topic(topics.dead_letter)
    pending = app.Table(
        "pending",
        default=None,
        partitions=settings.topic_partitions,
        key_type=bytes,  # bytes types select Faust's "raw" codec: we encode ourselves
        value_type=bytes,
        help="State of each reassembly key (see streams.reassembly.PendingMessage).",
    )

    async def send_reply(reply: Reply) -> None:
        await replies_topic.send(key=reply.reply_id.encode(), value=reply.encode())

    async def send_dead_letter(value: bytes, error: str) -> None:
        envelope = {
            "stage": "reassembly",
            "error": error,
            "record": value.decode("utf-8", "replace"),
        }
        await dead_letter_topic.send(value=orjson.dumps(envelope))

    publish = publish_reply or send_reply
    dead_letter = publish_dead_letter or send_dead_letter

    @app.agent(raw_topic, name="reassemble")
    async def reassemble(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            try:
                part = RawPart.decode(value)
                key = part.partition_key if part.concat is not None else None
                held = pending.get(key) if key is not None else None
                step = accept(PendingMessage.decode(held) if held else None, part)
            except Exception as exc:
                # A record we cannot process is data for the dead-letter topic;
                # crashing the agent would skip it silently and stall the stream.
                log.exception("raw record sent to the dead-letter topic")
                await dead_letter(value, f"{type(exc).__name__}: {exc}")
                metrics.PARTS_PROCESSED.labels("dead_letter").inc()
                continue
            if key is not None and not step.duplicate:
                if step.pending is None:
                    pending.pop(key, None)
                else:
                    pending[key] = step.pending.encode()
            for reply in step.replies:
                await publish(reply)
                metrics.REPLIES_EMITTED.labels(str(reply.complete).lower()).inc()
            metrics.PARTS_PROCESSED.labels("duplicate" if step.duplicate else "accepted").inc()

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST)

    @app.page("/healthz")
    async def health_page(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    return app
