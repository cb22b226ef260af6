"""Callbacks per second and latency of the ingress, against a bare aiohttp handler.

Load comes from ``wrk`` (closed loop: 1 thread, 32 connections, Lua scripts
that give every request its own ``messageId``), for the three encodings the
provider uses: GET query string, POST form, POST JSON. Targets, measured in
the same run on the same embedded broker:

* ``bare aiohttp``: a handler that reads the parameters and answers ``ok``
  (no validation, no Kafka): the ceiling of one aiohttp process here;
* ``ingress x1``: ``sms-replies ingest`` (validation, then acks=all publish
  before the 200);
* ``ingress x2``: the same with ``--ingest-workers 2`` (SO_REUSEPORT).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from benchmarks.common import broker_at, start_component, stop
from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import free_port
from sms_replies.broker.tansu import end_offsets
from sms_replies.procs import spawn
from sms_replies.settings import Settings

ENCODINGS = ("get", "form", "json")
PATH = "/callbacks/smspartner"
FIELDS = "to=33756781234&text=Oui+merci&type=text"
# Each request its own sender (as in real traffic: the Kafka key, so records
# spread over the raw topic's partitions) and its own messageId.
_SENDER = 'string.format("336%08d", counter % 100000000)'


_LUA = {
    "get": f"""
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "{PATH}?{FIELDS}&messageId=w" .. counter .. "&msisdn=" .. {_SENDER})
end
""",
    "form": f"""
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
request = function()
  counter = counter + 1
  return wrk.format(nil, "{PATH}", nil,
    "{FIELDS}&messageId=w" .. counter .. "&msisdn=" .. {_SENDER})
end
""",
    "json": f"""
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  return wrk.format(nil, "{PATH}", nil,
    '{{"to":"33756781234","text":"Oui merci","type":"text","msisdn":"'
    .. {_SENDER} .. '","messageId":"w' .. counter .. '"}}')
end
""",
}


TARGETS = (("bare aiohttp", 0), ("ingress x1", 1), ("ingress x2", 2))


def run(
    *,
    duration: float = 10.0,
    connections: int = 32,
    bootstrap: str | None = None,
    targets: tuple[tuple[str, int], ...] = TARGETS,
) -> list[dict[str, Any]]:
    if shutil.which("wrk") is None:
        return [{"target": "-", "encoding": "-", "skipped": "wrk is not installed"}]
    with broker_at(bootstrap) as address, tempfile.TemporaryDirectory(prefix="ingress-") as tmp:
        scratch = Path(tmp)
        for encoding, script in _LUA.items():
            (scratch / f"{encoding}.lua").write_text(script)
        settings = Settings.load(
            kafka_bootstrap=address,
            kafka_embedded=True,
            topic_prefix=f"bench-{uuid.uuid4().hex[:8]}",
            data_dir=scratch / "data",
            log_level="WARNING",
        )
        asyncio.run(ensure_topics(address, settings.topics, partitions=settings.topic_partitions))
        results: list[dict[str, Any]] = []
        for target, workers in targets:
            port = free_port()
            process = _start_target(settings, port, workers, scratch)
            try:
                _wait_listening(port)
                for encoding in ENCODINGS:
                    url = f"http://127.0.0.1:{port}{PATH}"
                    _wrk(url, scratch / f"{encoding}.lua", 1.0, connections)  # warm-up
                    records_before = _raw_records(address, settings) if workers else 0
                    cpu_before = _tree_cpu(process.pid)
                    figures = _wrk(url, scratch / f"{encoding}.lua", duration, connections)
                    cpu = _tree_cpu(process.pid) - cpu_before
                    requests = figures.pop("requests")
                    figures["cpu_us_per_request"] = round(cpu / max(requests, 1) * 1e6)
                    if workers:
                        # Callbacks per raw record: the publisher's grouping (sms_replies.grouping).
                        records = _raw_records(address, settings) - records_before
                        figures["callbacks_per_record"] = round(requests / max(records, 1), 2)
                    figures["load_avg"] = round(os.getloadavg()[0], 2)
                    if workers:
                        figures["publish_group_wait_s"] = settings.publish_group_wait
                    results.append({"target": target, "encoding": encoding, **figures})
            finally:
                stop(process)
        bare = {r["encoding"]: r for r in results if r["target"] == "bare aiohttp"}
        for r in results:
            base = bare.get(r["encoding"], {}).get("requests_per_s")
            if base and r.get("requests_per_s"):
                r["ratio"] = round(r["requests_per_s"] / base, 2)
            base_cpu = bare.get(r["encoding"], {}).get("cpu_us_per_request")
            if base_cpu and r.get("cpu_us_per_request"):
                r["cpu_ratio"] = round(base_cpu / r["cpu_us_per_request"], 2)
        return results


def _start_target(
    settings: Settings, port: int, workers: int, scratch: Path
) -> subprocess.Popen[bytes]:
    if workers == 0:
        log = (scratch / "bare.log").open("ab")
        try:
            return spawn(
                [sys.executable, "-m", "benchmarks.ingress", "--bare", str(port)],
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
    target = settings.model_copy(update={"http_port": port, "ingest_workers": workers})
    return start_component("ingest", target, scratch / f"ingest-{workers}.log")


def _raw_records(bootstrap: str, settings: Settings) -> int:
    return asyncio.run(raw_records(bootstrap, settings))


async def raw_records(bootstrap: str, settings: Settings) -> int:
    """Records written so far to the raw topic, over its partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(settings.topics.raw, p) for p in range(settings.topic_partitions)
        ]
        return sum((await end_offsets(consumer, partitions)).values())
    finally:
        await consumer.stop()


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live children."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return float("nan")
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing ready on port {port}")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk(url: str, script: Path, duration: float, connections: int) -> dict[str, Any]:
    completed = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = completed.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {
        pct: float(value) * _UNITS[unit]
        for pct, value, unit in re.findall(
            r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M
        )
    }
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    requests = re.search(r"(\d+) requests in", out)
    return {
        "requests_per_s": round(rate),
        "p50_ms": round(latency.get("50", float("nan")), 2),
        "p99_ms": round(latency.get("99", float("nan")), 2),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "requests": int(requests.group(1)) if requests else 0,
        "connections": connections,
        "seconds": round(duration),
    }


# The bare handler, run in its own process ----------------------------------------


def serve_bare(port: int) -> None:
    from aiohttp import web

    async def callback(request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                params.update(
                    {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
                )
        return web.Response(text="ok")

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", PATH, callback)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def render(results: list[dict[str, Any]]) -> Table:
    table = Table(title="Ingress: callbacks/s (wrk, 1 thread, closed loop), acks=all")
    columns = ("target", "encoding", "req/s", "p50 ms", "p99 ms", "non-2xx", "x bare")
    for column in (*columns, "CPU us/req", "x bare CPU", "load avg"):
        table.add_column(column, justify="left" if column in ("target", "encoding") else "right")
    for r in results:
        if "skipped" in r:
            table.add_row(r["target"], r["encoding"], r["skipped"], *[""] * 7)
            continue
        table.add_row(
            r["target"],
            r["encoding"],
            f"{r['requests_per_s']:,}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            str(r["non_2xx"]),
            str(r.get("ratio", "-")),
            str(r.get("cpu_us_per_request", "-")),
            str(r.get("cpu_ratio", "-")),
            str(r.get("load_avg", "-")),
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--bootstrap")
    parser.add_argument(
        "--targets", default="bare aiohttp,ingress x1,ingress x2", help="comma-separated"
    )
    parser.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        serve_bare(args.bare)
        return
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    wanted = [name.strip() for name in args.targets.split(",")]
    results = run(
        duration=args.duration,
        connections=args.connections,
        bootstrap=args.bootstrap,
        targets=tuple(t for t in TARGETS if t[0] in wanted),
    )
    Console(width=120).print(render(results))


if __name__ == "__main__":
    main()
