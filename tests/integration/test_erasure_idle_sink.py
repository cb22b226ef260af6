"""An idle sink acknowledges the erasure list at once: ``erase`` need not wait for new replies.

Before, the runner read the list only after a batch arrived, so on a quiet
pipeline every ``erase`` waited its 5 s and warned "sinks ...: not running, or
busy" although they were running and idle (found running the commands as a
user). Real embedded broker, real runner, a sink that records its writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from sms_replies.broker.admin import ensure_topics
from sms_replies.erasures import ErasureList, add_erasure, unseen_by
from sms_replies.records import Reply
from sms_replies.settings import Settings
from sms_replies.sinks.base import Sink
from sms_replies.sinks.runner import SinkRunner
from sms_replies.sinks.testing import make_reply

pytestmark = pytest.mark.integration

KEY = b"idle-key"


class Recording(Sink):
    name = "recording"

    def __init__(self) -> None:
        self.written: list[str] = []

    @classmethod
    def from_settings(cls, settings: Any) -> Recording:
        return cls()

    async def write(self, batch: Sequence[Reply]) -> None:
        self.written.extend(r.reply_id for r in batch)


async def until(condition: Any, timeout: float) -> float:
    """Seconds until ``condition()`` held; TimeoutError after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_an_idle_sink_acknowledges_a_new_erasure_within_a_second(
    settings: Settings, tmp_path: Path
) -> None:
    await ensure_topics(settings.bootstrap, settings.topics, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    sink = Recording()
    runner = SinkRunner(
        sink,
        bootstrap=settings.bootstrap,
        topics=settings.topics,
        group=f"{settings.topic_prefix}.sink.recording",
        batch_size=100,
        batch_timeout=0.2,
        dead_letters=producer,
        fetch_max_wait_ms=50,
        erasures=ErasureList(tmp_path, KEY),
    )
    task = asyncio.create_task(runner.run())
    try:
        await producer.send_and_wait(settings.topics.replies, make_reply(1).encode())
        await until(lambda: sink.written == [make_reply(1).reply_id], 60)
        add_erasure(tmp_path, "+33600000001", KEY)  # then nothing more arrives
        assert unseen_by(tmp_path, ["recording"]) == ["recording"]
        waited = await until(lambda: unseen_by(tmp_path, ["recording"]) == [], 3)
        assert waited < 1.5
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
        await producer.stop()
