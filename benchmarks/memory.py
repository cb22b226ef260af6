"""Worker RSS across a long stream with incomplete messages: flat, bounded by expiry.

The raw topic is fed at a steady rate (parts of one message in a row, as a
handset sends them; 5 % of the messages never get their last part) with
``received_at`` = now. The worker runs with a short reassembly timeout and
duplicate horizon (5 s / 30 s, ticks every second), so incomplete messages
expire and every key's tombstone is deleted 30 s after its message closed:
the table holds about ``rate x 30 s`` keys whatever the length of the run.
The worker's RSS (and the broker's, which keeps every record in RAM) is
sampled every second with psutil.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from benchmarks.common import LONG_NUMBER, bench_settings, start_component, stop
from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import EmbeddedBroker
from sms_replies.records import Concat, RawPart
from sms_replies.settings import Settings

INCOMPLETE = 0.05


def run(parts: int = 1_000_000, rate: int = 1500) -> dict[str, Any]:
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="memory-") as tmp:
        scratch = Path(tmp)
        settings = bench_settings(
            broker.bootstrap,
            scratch / "data",
            reassembly_timeout=5,
            dedup_horizon=30,
            expiry_tick_interval=1,
            log_level="WARNING",
        )
        asyncio.run(
            ensure_topics(broker.bootstrap, settings.topics, partitions=settings.topic_partitions)
        )
        (settings.data_dir / "worker").mkdir(parents=True)
        worker = start_component("worker", settings, scratch / "worker.log")
        try:
            assert broker.pid is not None
            samples = asyncio.run(_feed_and_sample(settings, parts, rate, worker.pid, broker.pid))
        finally:
            stop(worker)
    rss = [s["worker_rss_mb"] for s in samples]
    second_half = rss[len(rss) // 2 :] or rss
    return {
        "parts": parts,
        "rate_per_s": rate,
        "incomplete": INCOMPLETE,
        "reassembly_timeout_s": 5,
        "dedup_horizon_s": 30,
        "samples": samples,
        "worker_rss_max_mb": round(max(rss), 1),
        "worker_rss_end_mb": round(rss[-1], 1),
        "worker_rss_second_half_min_mb": round(min(second_half), 1),
        "worker_rss_second_half_max_mb": round(max(second_half), 1),
        "broker_rss_end_mb": round(samples[-1]["broker_rss_mb"], 1),
        "rocksdb_end_mb": {
            key.removeprefix("rocksdb_").removesuffix("_mb"): round(value, 1)
            for key, value in samples[-1].items()
            if key.startswith("rocksdb_")
        },
        "rocksdb_max_mb": {
            kind: round(max(s.get(f"rocksdb_{kind}_mb", 0.0) for s in samples), 1)
            for kind in ("memtables", "table_readers", "block_cache", "block_cache_pinned")
        },
    }


async def _feed_and_sample(
    settings: Settings, parts: int, rate: int, worker_pid: int, broker_pid: int
) -> list[dict[str, float]]:
    worker, broker = psutil.Process(worker_pid), psutil.Process(broker_pid)
    samples: list[dict[str, float]] = []
    sent = 0
    started = time.monotonic()

    async def sample() -> None:
        while True:
            samples.append(
                {
                    "t_s": round(time.monotonic() - started, 1),
                    "parts_sent": sent,
                    "worker_rss_mb": worker.memory_info().rss / 2**20,
                    "broker_rss_mb": broker.memory_info().rss / 2**20,
                    **{f"rocksdb_{kind}_mb": value / 2**20 for kind, value in rocksdb.items()},
                }
            )
            await asyncio.sleep(1.0)

    metrics_url = f"http://127.0.0.1:{settings.worker_web_port}/metrics"
    rocksdb: dict[str, float] = {}

    async def scrape_rocksdb() -> None:
        # RocksDB's own figures, from the worker's gauge (streams.rocksdb).
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(metrics_url) as answer:
                        rocksdb.update(rocksdb_bytes(await answer.text()))
                except aiohttp.ClientError:
                    pass  # not up yet
                await asyncio.sleep(1.0)

    scraper = asyncio.create_task(scrape_rocksdb())
    sampler = asyncio.create_task(sample())
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    rng = random.Random(11)
    try:
        message = 0
        while sent < parts:
            total = 2 if rng.random() < 0.9 else rng.choice((3, 4))
            keep = total - 1 if rng.random() < INCOMPLETE else total
            sender = f"+336{rng.randrange(10**8):08d}"
            now_ms = time.time_ns() // 1_000_000
            for number in range(1, keep + 1):
                part = RawPart(
                    channel="long_number",
                    sender=sender,
                    recipient=LONG_NUMBER,
                    text=f"partie {number} " + "x" * 140,
                    provider_message_id=f"M{message:09d}{number:02d}",
                    message_type="text",
                    received_at_ms=now_ms,
                    concat=Concat(ref=message % 256, total=total, part=number),
                )
                await producer.send(settings.topics.raw, part.encode(), key=part.partition_key)
                sent += 1
            message += 1
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
        # Let the last messages close, expire and be forgotten (horizon 30 s).
        await asyncio.sleep(45)
    finally:
        await producer.stop()
        sampler.cancel()
        scraper.cancel()
    return samples


_GAUGE = re.compile(r'^sms_replies_worker_rocksdb_bytes\{kind="(\w+)"\} ([0-9.e+]+)$', re.M)


def rocksdb_bytes(exposition: str) -> dict[str, float]:
    """``sms_replies_worker_rocksdb_bytes`` by kind, from a Prometheus text exposition."""
    return {kind: float(value) for kind, value in _GAUGE.findall(exposition)}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    fig, ax = plt.subplots(figsize=(8, 4))
    times = [s["t_s"] for s in samples]
    ax.plot(times, [s["worker_rss_mb"] for s in samples], label="worker RSS")
    for kind in ("memtables", "table_readers", "block_cache"):
        values = [s.get(f"rocksdb_{kind}_mb", float("nan")) for s in samples]
        ax.plot(times, values, label=f"RocksDB {kind.replace('_', ' ')}", linewidth=1)
    fed = next((s["t_s"] for s in samples if s["parts_sent"] >= result["parts"]), None)
    if fed is not None:
        ax.axvline(fed, color="grey", linestyle=":", label="last part sent")
    ax.legend(loc="center right")
    ax.set_xlabel("seconds since the first part")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.set_title(
        f"Worker memory, {result['parts']:,} parts at {result['rate_per_s']:,}/s, "
        f"{int(result['incomplete'] * 100)} % incomplete (timeout 5 s, horizon 30 s)"
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(result: dict[str, Any]) -> Table:
    table = Table(title="Worker memory (RSS, MiB)")
    columns = ("parts", "rate/s", "max", "2nd half min-max", "end", "broker end", "RocksDB end")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(
        f"{result['parts']:,}",
        f"{result['rate_per_s']:,}",
        str(result["worker_rss_max_mb"]),
        f"{result['worker_rss_second_half_min_mb']}-{result['worker_rss_second_half_max_mb']}",
        str(result["worker_rss_end_mb"]),
        str(result["broker_rss_end_mb"]),
        ", ".join(f"{kind} {value}" for kind, value in result["rocksdb_end_mb"].items()),
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1500)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    result = run(args.parts, args.rate)
    Console(width=120).print(render(result))
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
