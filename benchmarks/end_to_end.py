"""The callback rate the whole pipeline sustains, and its latency, step by step.

Processes: embedded broker, ``sms-replies ingest``, ``worker`` (RocksDB) and
``sinks`` (DuckDB), as ``sms-replies run`` starts them. An open-loop generator
in its own process offers a fixed rate of callbacks (90 % single replies, 10 %
two-part replies, GET, each with its own ``messageId``) for a few seconds per
step, at increasing rates. For each step:

* achieved: callbacks answered 200 per second, and the HTTP p50/p99;
* end to end: ``ingested_at - received_at`` of the step's rows in DuckDB, i.e.
  from the ingress accepting the callback to the sink writing its row (an upper
  bound of "200 answered -> row written"), p50/p99;
* drain: how long after the step's last callback its last row appeared.

The knee is the highest offered rate that is both achieved (>= 95 %) and has an
end-to-end p99 under 1 s. The sink's batch timeout is 0.25 s for the run (the
default, 1 s, is a latency floor of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from rich.console import Console
from rich.table import Table

from benchmarks.common import bench_settings, start_component, stop
from sms_replies.analytics.store import StoreError, open_reader
from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import EmbeddedBroker
from sms_replies.settings import Settings

RATES = (250, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000)
QUICK_RATES = (250, 1000, 2000)
PATH = "/callbacks/smspartner"


def run(
    rates: Sequence[int] = RATES,
    *,
    step_seconds: float = 10.0,
    ingest_workers: int = 1,
    worker_processes: int = 1,
) -> list[dict[str, Any]]:
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="e2e-") as tmp:
        scratch = Path(tmp)
        settings = bench_settings(
            broker.bootstrap,
            scratch / "data",
            sinks=["duckdb"],
            sink_batch_timeout=0.25,
            ingest_workers=ingest_workers,
            worker_processes=worker_processes,
            log_level="WARNING",
        )
        asyncio.run(
            ensure_topics(broker.bootstrap, settings.topics, partitions=settings.topic_partitions)
        )
        processes = [
            start_component(
                "worker",
                settings.model_copy(update={"worker_index": index}),
                scratch / f"worker-{index}.log",
            )
            for index in range(worker_processes)
        ] + [
            start_component(command, settings, scratch / f"{command}.log")
            for command in ("sinks", "ingest")
        ]
        components = {
            **{
                f"worker-{i}" if worker_processes > 1 else "worker": p
                for i, p in enumerate(processes[:worker_processes])
            },
            "sinks": processes[-2],
            "ingest": processes[-1],
        }
        pids = {name: process.pid for name, process in components.items()}
        if broker.pid is not None:
            pids["broker"] = broker.pid
        try:
            return asyncio.run(_steps(settings, rates, step_seconds, scratch, pids))
        finally:
            for process in reversed(processes):
                stop(process)


async def _steps(
    settings: Settings,
    rates: Sequence[int],
    step_seconds: float,
    scratch: Path,
    pids: dict[str, int],
) -> list[dict[str, Any]]:
    url = f"http://{settings.http_host}:{settings.http_port}{PATH}"
    await _wait_ready(f"http://{settings.http_host}:{settings.http_port}/readyz")
    # Warm-up: the worker has joined its group and the sink has its table.
    await _offer(url, "warm", 50, 2.0)
    await _wait_rows(settings.duckdb_path, "warm", 1, wait_s=120)
    results = []
    for step, rate in enumerate(rates):
        prefix = f"s{step}"
        cpu_before = {name: _tree_cpu(pid) for name, pid in pids.items()}
        load = await asyncio.to_thread(_offer_in_process, url, prefix, rate, step_seconds)
        # CPU of each process over the step's sending, per callback answered.
        cpu = {name: _tree_cpu(pid) - cpu_before[name] for name, pid in pids.items()}
        cpu["generator"] = load["cpu_s"]
        sent_done = time.time()
        expected = load["replies_accepted"]
        latencies, last_ingested = await _wait_rows(
            settings.duckdb_path, prefix, expected, wait_s=60
        )
        row: dict[str, Any] = {
            "offered_per_s": rate,
            "achieved_per_s": round(load["accepted"] / load["seconds"]),
            "http_p50_ms": load["p50_ms"],
            "http_p99_ms": load["p99_ms"],
            "errors": load["errors"],
            "rows": len(latencies),
            "replies_expected": expected,
            "load_avg": round(os.getloadavg()[0], 2),
            "cpu_us_per_callback": {
                name: round(seconds * 1e6 / max(load["accepted"], 1))
                for name, seconds in cpu.items()
            },
        }
        if latencies:
            row["e2e_p50_ms"] = round(_pct(latencies, 50))
            row["e2e_p99_ms"] = round(_pct(latencies, 99))
            row["drain_s"] = round(max(0.0, last_ingested - sent_done), 1)
        row["held"] = bool(
            row["achieved_per_s"] >= 0.95 * rate
            and len(latencies) >= expected
            and row.get("e2e_p99_ms", math.inf) < 1000
        )
        results.append(row)
        if len(latencies) < expected:
            break  # a backlog would pollute every later step
    return results


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live children."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


async def _wait_ready(url: str, wait_s: float = 60) -> None:
    deadline = time.monotonic() + wait_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} not ready")


async def _wait_rows(
    path: Path, prefix: str, expected: int, *, wait_s: float
) -> tuple[list[float], float]:
    """(end-to-end ms of the rows of ``prefix``, epoch s of the last row) once all are in."""
    deadline = time.monotonic() + wait_s
    latencies: list[float] = []
    last = 0.0
    while time.monotonic() < deadline:
        rows = _read(path, prefix)
        if rows is not None:
            latencies = [(ingested - received) * 1000 for received, ingested in rows]
            last = max((ingested for _, ingested in rows), default=0.0)
            if len(rows) >= expected:
                break
        await asyncio.sleep(0.5)
    return latencies, last


def _read(path: Path, prefix: str) -> list[tuple[float, float]] | None:
    if not path.exists():
        return None
    try:
        # Through the DuckDB sink while it owns the store.
        with open_reader(path, timeout=1.0) as con:
            return [
                (float(received), float(ingested))
                for received, ingested in con.execute(
                    "SELECT epoch(received_at), epoch(ingested_at) FROM replies "
                    "WHERE provider_message_ids[1] LIKE ?",
                    [f"{prefix}-%"],
                ).fetchall()
            ]
    except StoreError:
        return None  # locked or being opened: try again


# The load generator, in its own process so that it does not share a loop ------------


def _offer_in_process(url: str, prefix: str, rate: int, seconds: float) -> dict[str, Any]:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.end_to_end",
            "--offer",
            url,
            prefix,
            *_args(rate, seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _args(rate: int, seconds: float) -> list[str]:
    return [str(rate), str(seconds)]


def _callbacks(prefix: str, count: int) -> Iterator[str]:
    """Query strings: 90 % single replies, 10 % two-part replies (both parts in a row)."""
    n = 0
    while n < count:
        sender = f"336{(hash(prefix) % 1000 + n) % 10**8:08d}"
        base = f"msisdn={sender}&to=33756781234&type=text"
        if n % 10 == 9:
            for part in (1, 2):
                yield (
                    f"{base}&messageId={prefix}-{n}-{part}&text=partie+{part}&concat=true"
                    f"&concat-ref={n % 256}&concat-total=2&concat-part={part}"
                )
            n += 2
        else:
            yield f"{base}&messageId={prefix}-{n}&text=Oui+merci"
            n += 1


async def offer(url: str, prefix: str, rate: int, seconds: float) -> dict[str, Any]:
    """Send ``rate`` callbacks/s for ``seconds`` on schedule (open loop), whatever the answers."""
    count = int(rate * seconds)
    queries = list(_callbacks(prefix, count))
    cpu_started = time.process_time()
    latencies: list[float] = []
    errors = 0
    accepted_replies = 0
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(query: str) -> None:
            nonlocal errors, accepted_replies
            started = time.perf_counter()
            try:
                async with session.get(f"{url}?{query}") as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            latencies.append((time.perf_counter() - started) * 1000)
            if ok:
                # Part 2 completes a reply; part 1 alone does not.
                accepted_replies += 0 if "concat-part=1" in query else 1
            else:
                errors += 1

        start = time.perf_counter()
        tasks = []
        for i, query in enumerate(queries):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(query)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {
        "cpu_s": time.process_time() - cpu_started,
        "accepted": len(queries) - errors,
        "replies_accepted": accepted_replies,
        "errors": errors,
        "seconds": max(elapsed, seconds),
        "p50_ms": round(_pct(latencies, 50), 1),
        "p99_ms": round(_pct(latencies, 99), 1),
    }


async def _offer(url: str, prefix: str, rate: int, seconds: float) -> dict[str, Any]:
    return await offer(url, prefix, rate, seconds)


def render(results: list[dict[str, Any]]) -> Table:
    table = Table(title="End to end: ingress -> broker -> worker -> DuckDB, open-loop load")
    columns = ("offered/s", "achieved/s", "HTTP p50", "HTTP p99", "errors")
    columns += ("rows", "e2e p50 ms", "e2e p99 ms", "drain s", "held", "load avg")
    for column in columns:
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            f"{r['offered_per_s']:,}",
            f"{r['achieved_per_s']:,}",
            str(r["http_p50_ms"]),
            str(r["http_p99_ms"]),
            str(r["errors"]),
            f"{r['rows']:,}/{r['replies_expected']:,}",
            str(r.get("e2e_p50_ms", "-")),
            str(r.get("e2e_p99_ms", "-")),
            str(r.get("drain_s", "-")),
            "yes" if r["held"] else "no",
            str(r.get("load_avg", "-")),
        )
    return table


def knee(results: list[dict[str, Any]]) -> int | None:
    held = [r["offered_per_s"] for r in results if r["held"]]
    return max(held) if held else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ingest-workers", type=int, default=1)
    parser.add_argument("--worker-processes", type=int, default=1)
    parser.add_argument("--offer", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.offer:
        url, prefix, rate, seconds = args.offer
        print(json.dumps(asyncio.run(offer(url, prefix, int(rate), float(seconds)))))
        return
    results = run(
        args.rates or RATES,
        step_seconds=args.seconds,
        ingest_workers=args.ingest_workers,
        worker_processes=args.worker_processes,
    )
    Console(width=140).print(render(results))
    for r in results:
        print(f"{r['offered_per_s']}/s CPU us per callback: {r.get('cpu_us_per_callback')}")
    print(f"knee: {knee(results)} callbacks/s")


if __name__ == "__main__":
    main()
