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
import collections
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from rich.console import Console
from rich.table import Table

from benchmarks.common import bench_settings, start_component, stop
from benchmarks.ingress import raw_records
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
        records_before = await raw_records(settings.bootstrap, settings)
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
            "publish_group_wait_s": settings.publish_group_wait,
            # The ingress's grouping (sms_replies.grouping): one worker event per record.
            "callbacks_per_record": round(
                load["accepted"]
                / max(1, await raw_records(settings.bootstrap, settings) - records_before),
                2,
            ),
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
    """Send ``rate`` callbacks/s for ``seconds`` on schedule (open loop), whatever the answers.

    A request due while every connection is busy opens another (up to
    :data:`MAX_CONNECTIONS`) or waits for the first free one; its latency runs
    from the moment it was due. HTTP/1.1 keep-alive written by hand
    (:class:`_Client`): aiohttp's client cost 290-340 us of CPU per callback, on
    the cores the pipeline runs on; this one a tenth of that.
    """
    count = int(rate * seconds)
    queries = list(_callbacks(prefix, count))
    cpu_started = time.process_time()
    target = urllib.parse.urlsplit(url)
    client = _Client(
        target.hostname or "127.0.0.1", target.port or 80, target.path, MAX_CONNECTIONS
    )
    start = time.perf_counter()
    for i, query in enumerate(queries):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        client.request(query, start + i / rate)
    await client.finished(wait_s=120)
    elapsed = time.perf_counter() - start
    client.close()
    accepted = [query for query, ok in zip(queries, client.ok, strict=True) if ok]
    errors = len(queries) - len(accepted)
    return {
        "cpu_s": time.process_time() - cpu_started,
        "accepted": len(accepted),
        # Part 2 completes a reply; part 1 alone does not.
        "replies_accepted": sum(1 for query in accepted if "concat-part=1" not in query),
        "errors": errors,
        "seconds": max(elapsed, seconds),
        "p50_ms": round(_pct(client.latencies, 50), 1) if client.latencies else math.nan,
        "p99_ms": round(_pct(client.latencies, 99), 1) if client.latencies else math.nan,
    }


#: Connections the generator opens at most (as aiohttp's connector limit it replaced).
MAX_CONNECTIONS = 512


class _Client:
    """GET requests over keep-alive connections, each answered before the next is sent."""

    def __init__(self, host: str, port: int, path: str, max_connections: int) -> None:
        self.host, self.port, self.max_connections = host, port, max_connections
        self.prefix = f"GET {path}?".encode()
        self.suffix = f" HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        self.idle: list[_Connection] = []
        self.opened = 0
        self.waiting: collections.deque[tuple[int, bytes, float]] = collections.deque()
        self.ok: list[bool] = []
        self.latencies: list[float] = []
        self.outstanding = 0
        self.done = asyncio.Event()
        self.connections: list[_Connection] = []

    def request(self, query: str, due: float) -> None:
        index = len(self.ok)
        self.ok.append(False)
        self.outstanding += 1
        self.done.clear()
        payload = self.prefix + query.encode() + self.suffix
        if self.idle:
            self.idle.pop().send(index, payload, due)
            return
        self.waiting.append((index, payload, due))
        if self.opened < self.max_connections:
            self.opened += 1
            asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError:
            self.opened -= 1
            if self.waiting:  # this request fails; the others wait for a connection
                index, _, due = self.waiting.popleft()
                self.answered(index, due, ok=False)
            return
        self.connections.append(connection)
        self.free(connection)

    def free(self, connection: _Connection) -> None:
        if self.waiting:
            connection.send(*self.waiting.popleft())
        else:
            self.idle.append(connection)

    def answered(self, index: int, due: float, *, ok: bool) -> None:
        self.ok[index] = ok
        self.latencies.append((time.perf_counter() - due) * 1000)
        self.outstanding -= 1
        if not self.outstanding:
            self.done.set()

    def lost(self, connection: _Connection) -> None:
        self.opened -= 1
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)
        if self.waiting:  # closed by the server: another one for those waiting
            self.opened += 1
            asyncio.get_running_loop().create_task(self._open())

    async def finished(self, wait_s: float) -> None:
        if self.outstanding:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), wait_s)

    def close(self) -> None:
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.close()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request in flight, its answer's status and length."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.current: tuple[int, float] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, index: int, payload: bytes, due: float) -> None:
        self.current = (index, due)
        assert self.transport is not None
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.current is None:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = int(head[at + 17 : head.find(b"\r\n", at + 2)]) if at >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        index, due = self.current
        self.current = None
        self.client.answered(index, due, ok=head[9:12] == b"200")
        if b"\r\nconnection: close" in head:
            assert self.transport is not None
            self.transport.close()
        else:
            self.client.free(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.client.lost(self)
        if self.current is not None:
            index, due = self.current
            self.current = None
            self.client.answered(index, due, ok=False)


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
        print(
            f"{r['offered_per_s']}/s CPU us per callback: {r.get('cpu_us_per_callback')}, "
            f"callbacks per raw record: {r.get('callbacks_per_record')}"
        )
    print(f"knee: {knee(results)} callbacks/s")


if __name__ == "__main__":
    main()
