"""Topic creation, with every config spelled out (Tansu describes only explicit configs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from sms_replies.errors import BrokerUnavailable
from sms_replies.records import Topics

log = logging.getLogger(__name__)

_DAY_MS = 24 * 3600 * 1000
# Raw callbacks and replies are replayable for a week; audit trails for a month.
_RETENTION_MS = {"raw": 7 * _DAY_MS, "replies": 7 * _DAY_MS, "rejects": 30 * _DAY_MS}


async def ensure_topics(
    bootstrap: str, topics: Topics, *, partitions: int, replication_factor: int = 1
) -> None:
    """Create the pipeline's topics if missing. Idempotent."""
    wanted = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            topic_configs={
                "cleanup.policy": "delete",
                "retention.ms": str(_RETENTION_MS.get(role, 30 * _DAY_MS)),
            },
        )
        for role, name in (
            ("raw", topics.raw),
            ("replies", topics.replies),
            ("rejects", topics.rejects),
            ("dead_letter", topics.dead_letter),
        )
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # created concurrently
                await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot create topics on {bootstrap}: {exc}") from None
    finally:
        await admin.close()


async def wait_for_topics(
    bootstrap: str,
    topics: Topics,
    *,
    partitions: int,
    replication_factor: int = 1,
    max_delay: float = 10.0,
) -> None:
    """:func:`ensure_topics`, retried until the broker answers: a process that starts
    before its broker waits for it instead of exiting."""
    delay = 0.5
    while True:
        try:
            await ensure_topics(
                bootstrap, topics, partitions=partitions, replication_factor=replication_factor
            )
            return
        except BrokerUnavailable as exc:
            log.warning("%s; retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
