"""Probing the ingress and the topics after the run, and printing the figures."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from rich.console import Console
from rich.table import Table

from benchmarks.fuzz_ingress.cases import TOKEN, VALID_LONG
from sms_replies.ingest.app import CALLBACK_PATH
from sms_replies.records import RawGroup, decode_raw


async def _wait_ready(url: str, ingress: subprocess.Popen[bytes]) -> None:
    timeout = 30.0
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if ingress.poll() is not None:
                raise RuntimeError(f"ingress exited with {ingress.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


async def _valid_callback(base: str) -> int:
    params = {**VALID_LONG, "messageId": "after-the-fuzz"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}{CALLBACK_PATH}", params={"token": TOKEN}, data=params) as response,
    ):
        return response.status


async def _rate_limited(base: str) -> int:
    """The ingress's count of 404/405 refusals not audited (beyond the audit rate)."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith('sms_replies_rejects_not_audited_total{reason="rate_limited"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


async def _count(bootstrap: str, topic: str) -> int:
    """Records in a topic: the sum of its partitions' end offsets (nothing is compacted)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer.topics()  # refresh the metadata once
            partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


async def _count_parts(bootstrap: str, topic: str) -> int:
    """Callbacks in the raw topic: a group record holds several (records.RawGroup)."""
    expected = await _count(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    parts = seen = 0
    try:
        async with asyncio.timeout(30):
            while seen < expected:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        seen += 1
                        decoded = decode_raw(record.value or b"")
                        parts += len(decoded.parts) if isinstance(decoded, RawGroup) else 1
    finally:
        await consumer.stop()
    return parts


def print_summary(figures: dict[str, Any], console: Console) -> None:
    console.print(
        f"[bold]{figures['requests']:,} requests in {figures['seconds']} s "
        f"({figures['requests_per_second']:,} req/s)[/bold]; ingress alive: "
        f"{figures['ingress_alive']}; valid callback afterwards: {figures['valid_after']}; "
        f"audit records: {figures['audited']:,} + {figures['rate_limited']:,} 404/405 "
        f"beyond the audit rate (JSON rejects answered: "
        f"{figures['app_rejects_answered']:,}); accepted: {figures['accepted_on_raw_topic']:,}"
    )
    statuses = sorted({s for counts in figures["by_kind"].values() for s in counts})
    table = Table(title="answers by kind of request")
    table.add_column("kind")
    for status in statuses:
        table.add_column(status, justify="right")
    table.add_column("total", justify="right")
    table.add_column("mean ms", justify="right")
    for kind, counts in figures["by_kind"].items():
        table.add_row(
            kind,
            *(f"{counts.get(s, 0):,}" if counts.get(s) else "" for s in statuses),
            f"{sum(counts.values()):,}",
            f"{figures['ms_by_kind'][kind]:,}",
        )
    table.add_row(
        "[bold]all[/bold]",
        *(f"{figures['statuses'].get(s, 0):,}" for s in statuses),
        f"{figures['requests']:,}",
        "",
    )
    console.print(table)
