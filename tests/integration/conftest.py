"""Integration fixtures: one real embedded broker per session, real processes per test.

Every test gets its own topic prefix, group ids, ports and data directory, so
tests never see each other's records.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer

from sms_replies.analytics.store import open_reader
from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import EmbeddedBroker, free_port
from sms_replies.procs import spawn
from sms_replies.settings import Settings


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as embedded:
        yield embedded


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    run_id = uuid.uuid4().hex[:8]
    return Settings.load(
        kafka_bootstrap=broker.bootstrap,
        kafka_embedded=True,
        topic_prefix=f"test-{run_id}",
        worker_id=f"test-{run_id}-reassembly",
        topic_partitions=4,
        http_port=free_port(),
        worker_web_port=free_port(),
        sinks_web_port=free_port(),
        data_dir=tmp_path / "data",
        sink_batch_timeout=0.2,
        publish_timeout=3.0,
    )


class Processes:
    """Starts ``python -m sms_replies <command>`` children with the test's settings."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, command: str, name: str | None = None, **extra_env: str
    ) -> subprocess.Popen[bytes]:
        """``name`` (default: ``command``) keys the child here and names its log file."""
        name = name or command
        env = {**os.environ, **self.settings.as_env(), **extra_env}
        with (self.log_dir / f"{name}.log").open("ab") as log:
            child = spawn(
                [sys.executable, "-m", "sms_replies", command], env=env, stdout=log, stderr=log
            )
        self.children[name] = child
        return child

    def stop(self, command: str, sig: int | None = None, timeout: float = 30) -> int:
        child = self.children.pop(command)
        if sig is None:
            child.terminate()
        else:
            child.send_signal(sig)
        try:
            return child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()

    def stop_all(self) -> None:
        for command in list(self.children):
            self.stop(command)

    def log(self, command: str) -> str:
        return (self.log_dir / f"{command}.log").read_text(errors="replace")


@pytest.fixture
async def processes(settings: Settings, tmp_path: Path) -> AsyncIterator[Processes]:
    await ensure_topics(settings.bootstrap, settings.topics, partitions=settings.topic_partitions)
    procs = Processes(settings, tmp_path)
    yield procs
    procs.stop_all()


async def consume(bootstrap: str, topic: str, count: int, timeout: float = 20) -> list[bytes]:
    """At least ``count`` values of ``topic`` from the beginning (no consumer group)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            while len(values) < count:
                batch = await consumer.getmany(timeout_ms=200)
                values.extend(r.value for records in batch.values() for r in records if r.value)
    finally:
        await consumer.stop()
    return values


async def start_pipeline(processes: Processes, settings: Settings) -> str:
    """Worker, sinks and ingress as processes; returns the callback URL once ready."""
    for command in ("worker", "sinks", "ingest"):
        processes.start(command)
    base = f"http://{settings.http_host}:{settings.http_port}"
    await wait_ready(f"{base}/readyz")
    return f"{base}/callbacks/smspartner"


async def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def read_rows(path: Path, sql: str = "SELECT * FROM replies") -> list[dict[str, Any]]:
    """Rows of the store, read-only: through the DuckDB sink while it owns the store."""
    with open_reader(path, timeout=5.0) as con:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


async def wait_for_rows(
    path: Path, count: int, timeout: float = 60, sql: str = "SELECT * FROM replies"
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if path.exists():
            rows = read_rows(path, sql)
            if len(rows) >= count:
                return rows
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{len(rows)} rows after {timeout}s, expected {count}")
