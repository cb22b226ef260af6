"""Parts per second through the reassembly stage, against a raw aiokafka loop.

A raw topic (8 partitions) is pre-loaded with shuffled, realistic callbacks
(``multipart``: 90 % two-part messages, 10 % three or four parts; ``mixed``: 80 %
single replies, the rest parts of long replies) as the ingress writes them: its
own Publisher, with as many callbacks in flight as the end-to-end benchmark's
client (benchmarks.common.INGRESS_CONCURRENCY), so callbacks published together
travel as one record per partition. ``mixed (one per record)`` is the mixed load
written one part per record by a plain aiokafka producer, as before the ingress
grouped callbacks. Each processor then reads it from the start, as one process
and as two sharing the partitions (``x2``, multipart only), one after the other:

* ``raw loop``: aiokafka ``getmany`` -> the same pure ``accept`` logic over a
  plain dict, for each part of a record -> an aiokafka producer. No durable
  state, no commits: the floor of what any Python processor costs here.
* ``quix-streams``: the peer, benchmarks.quix_peer.
* ``faust worker``: the production worker, ``python -m sms_replies worker``
  (RocksDB table with its changelog, the embedded-broker settings).

Each one's rate is measured the same way: replies expected / (last reply's
timestamp - first reply's), start-up and group join excluded; CPU is the
process's own. ``--profile`` attaches py-spy to the worker while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.console import Console
from rich.table import Table

from benchmarks.common import (
    INGRESS_CONCURRENCY,
    Via,
    broker_at,
    count_records,
    cpu_seconds,
    end_offsets_of,
    mixed_load,
    multipart_load,
    produce_parts,
    start_component,
    stop,
)
from sms_replies.bounds import Bounds
from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import free_port
from sms_replies.records import ExpiryTick, RawGroup, decode_raw
from sms_replies.settings import Settings
from sms_replies.streams.reassembly import KeyState, accept

PARTITIONS = 8
DEFAULT_PARTS = 200_000


@dataclass(frozen=True, slots=True)
class LoadKind:
    """A workload and how the raw topic is filled with it (benchmarks.common.produce_parts)."""

    workload: str  # "multipart": all parts of long replies; "mixed": 80 % single replies
    via: Via


#: The loads, by name: each workload as the ingress writes it, and the mixed one also
#: one part per record (before the ingress grouped callbacks) for comparison.
LOADS = {
    "multipart": LoadKind("multipart", "ingress"),
    "mixed": LoadKind("mixed", "ingress"),
    "mixed (one per record)": LoadKind("mixed", "producer"),
}
#: Each processor as one process, then as two sharing the partitions (2 cores here).
PROCESSORS = (
    "raw loop",
    "quix-streams",
    "faust worker",
    "raw loop x2",
    "faust worker x2",
    "faust worker x2, no standby",
)
#: On the mixed load: the worker against its peer, side by side.
MIXED_PROCESSORS = ("quix-streams", "faust worker", "raw loop")


def run(
    parts: int = DEFAULT_PARTS,
    *,
    bootstrap: str | None = None,
    profile: Path | None = None,
    processors: tuple[str, ...] = PROCESSORS,
    loads: tuple[str, ...] = tuple(LOADS),
    concurrency: int = INGRESS_CONCURRENCY,
) -> list[dict[str, Any]]:
    """``loads``: names of :data:`LOADS` (see :func:`select_loads` for workloads)."""
    with broker_at(bootstrap) as address:
        results: list[dict[str, Any]] = []
        for load in loads:
            wanted = processors if LOADS[load].workload == "multipart" else _mixed(processors)
            results += asyncio.run(_run(address, load, parts, profile, wanted, concurrency))
        return results


def select_loads(names: tuple[str, ...]) -> list[str]:
    """The loads named, or of the workloads named, in :data:`LOADS`' order."""
    unknown = set(names) - set(LOADS) - {kind.workload for kind in LOADS.values()}
    if unknown:
        raise ValueError(f"unknown loads: {', '.join(sorted(unknown))}")
    return [name for name, kind in LOADS.items() if name in names or kind.workload in names]


def _mixed(processors: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p for p in processors if p in MIXED_PROCESSORS)


async def _run(
    bootstrap: str,
    load_name: str,
    parts: int,
    profile: Path | None,
    processors: tuple[str, ...],
    concurrency: int,
) -> list[dict[str, Any]]:
    kind = LOADS[load_name]
    load = multipart_load(parts) if kind.workload == "multipart" else mixed_load(parts)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings.load(topic_prefix=prefix, topic_partitions=PARTITIONS)
    await ensure_topics(bootstrap, settings.topics, partitions=PARTITIONS)
    filled = await produce_parts(
        bootstrap,
        settings.topics.raw,
        load.parts,
        via=kind.via,
        concurrency=concurrency,
        max_record_bytes=Bounds.of(settings).max_value_bytes,  # the ingress's bound
    )
    # The worker profiled on the mixed loads, each to its own file.
    spy_output = None
    if profile is not None and kind.workload == "mixed":
        spy_output = profile if kind.via == "ingress" else profile.with_stem(f"{profile.stem}-1")
    if kind.via == "ingress" and concurrency != INGRESS_CONCURRENCY:
        load_name = f"{load_name}, {concurrency} in flight"
    common = {
        "load": load_name,
        "parts": len(load.parts),
        "messages": load.messages,
        "fill": kind.via,
        **({"in_flight": concurrency} if kind.via == "ingress" else {}),
        "records": filled.records,
        "parts_per_record": round(filled.parts_per_record, 2),
        "load_s": round(filled.seconds, 1),
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="reassembly-bench-") as scratch:
        for name in processors:
            count = 2 if " x2" in name else 1
            if name.startswith("raw loop"):
                figures = await _raw_loop(
                    bootstrap, settings, load.messages, len(load.parts), Path(scratch), count
                )
            elif name == "quix-streams":
                figures = await _quix(
                    bootstrap, settings, load.messages, len(load.parts), Path(scratch)
                )
            else:
                figures = await _faust(
                    bootstrap,
                    settings,
                    load.messages,
                    len(load.parts),
                    Path(scratch),
                    spy_output if count == 1 else None,
                    count,
                    standby=0 if "no standby" in name else 1,
                )
            figures["load_avg"] = round(os.getloadavg()[0], 2)  # others' work on the machine
            results.append({"processor": name, "processes": count, **common, **figures})
    rates = {r["processor"]: r.get("parts_per_s") for r in results}
    for r in results:
        # Against the raw loop with as many processes, and against the single raw loop.
        same = rates.get("raw loop x2" if r["processes"] == 2 else "raw loop")
        single = rates.get("raw loop")
        peer = rates.get("quix-streams")
        if r.get("parts_per_s") and same:
            r["ratio"] = round(r["parts_per_s"] / same, 2)
        if r.get("parts_per_s") and single:
            r["ratio_single"] = round(r["parts_per_s"] / single, 2)
        if r.get("parts_per_s") and peer:
            r["ratio_quix"] = round(r["parts_per_s"] / peer, 2)
    return results


async def _create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=PARTITIONS,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "delete", "retention.ms": "86400000"},
                )
            ]
        )
    finally:
        await admin.close()


async def _watch(
    processes: list[subprocess.Popen[bytes]],
    bootstrap: str,
    topic: str,
    expected: int,
    parts: int,
    profile: Path | None = None,
    start: dict[int, int] | None = None,
) -> dict[str, Any]:
    started = time.monotonic()
    spy: subprocess.Popen[bytes] | None = None
    if profile is not None:
        # Attach once the worker has joined and is busy: start-up is not the question.
        await count_records(bootstrap, topic, 1, wait_s=120, partitions=PARTITIONS, start=start)
        spy = subprocess.Popen(  # noqa: ASYNC220 (starts at once; not awaited)
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(processes[0].pid),
                "--rate",
                "200",
                "--duration",
                "20",
                "--format",
                "raw",
                "--output",
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    count, first, last = await count_records(
        bootstrap, topic, expected, wait_s=900, partitions=PARTITIONS, start=start
    )
    cpu = sum(cpu_seconds(process.pid) for process in processes)
    wall = time.monotonic() - started
    if spy is not None:
        spy.wait()
    figures: dict[str, Any] = {"replies": count, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1)}
    if count >= expected and first is not None and last is not None and last > first:
        window = last - first
        figures["window_s"] = round(window, 2)
        figures["parts_per_s"] = round(parts / window)
    return figures


async def _raw_loop(
    bootstrap: str, settings: Settings, messages: int, parts: int, scratch: Path, count: int
) -> dict[str, Any]:
    topic = f"{settings.topic_prefix}.raw-loop-replies-{count}"
    await _create_topic(bootstrap, topic)
    log = (scratch / f"raw-loop-{count}.log").open("ab")
    processes = [
        subprocess.Popen(  # noqa: ASYNC220 (starts at once; not awaited)
            [
                sys.executable,
                "-m",
                "benchmarks.reassembly",
                "--raw-loop",
                bootstrap,
                settings.topics.raw,
                topic,
                ",".join(str(p) for p in range(PARTITIONS) if p % count == index),
            ],
            stdout=log,
            stderr=log,
        )
        for index in range(count)
    ]
    try:
        return await _watch(processes, bootstrap, topic, messages, parts)
    finally:
        for process in processes:
            stop(process)
        log.close()


async def _faust(
    bootstrap: str,
    settings: Settings,
    messages: int,
    parts: int,
    scratch: Path,
    profile: Path | None,
    count: int,
    standby: int,
) -> dict[str, Any]:
    # Each run its own group (and changelog); replies counted from where they end now.
    group = f"{settings.topic_prefix}-reassembly-{count}-{standby}"
    replies = settings.topics.replies
    start = await end_offsets_of(bootstrap, replies, PARTITIONS)
    processes = []
    for index in range(count):
        worker_settings = settings.model_copy(
            update={
                "kafka_bootstrap": bootstrap,
                "kafka_embedded": True,
                "worker_id": group,
                "worker_index": index,
                "worker_processes": count,
                "worker_standby_replicas": standby,
                "data_dir": scratch / f"data-{count}-{standby}",
                "worker_web_port": free_port(),
                "log_level": "INFO",
            }
        )
        processes.append(
            start_component(
                "worker", worker_settings, scratch / f"worker-{count}-{standby}-{index}.log"
            )
        )
    try:
        return await _watch(processes, bootstrap, replies, messages, parts, profile, start)
    finally:
        for process in processes:
            stop(process)


async def _quix(
    bootstrap: str, settings: Settings, messages: int, parts: int, scratch: Path
) -> dict[str, Any]:
    topic = f"{settings.topic_prefix}.quix-replies"
    await _create_topic(bootstrap, topic)
    log = (scratch / "quix.log").open("ab")
    process = subprocess.Popen(  # noqa: ASYNC220 (starts at once; not awaited)
        [
            sys.executable,
            "-m",
            "benchmarks.quix_peer",
            bootstrap,
            settings.topics.raw,
            topic,
            f"{settings.topic_prefix}-quix",
            str(scratch / "quix-state"),
        ],
        stdout=log,
        stderr=log,
    )
    try:
        return await _watch([process], bootstrap, topic, messages, parts)
    finally:
        stop(process)
        log.close()


# The raw loop, run in its own process -------------------------------------------


async def raw_loop(bootstrap: str, source: str, sink: str, partitions: list[int]) -> None:
    """getmany -> accept() over a dict -> produce, for ``partitions``; until stopped."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=2000
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(source, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        state: dict[bytes, KeyState] = {}
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            futures = []
            for records in batches.values():
                for record in records:
                    decoded = decode_raw(record.value)
                    if isinstance(decoded, ExpiryTick):
                        continue
                    parts = decoded.parts if isinstance(decoded, RawGroup) else (decoded,)
                    for part in parts:
                        key = part.partition_key
                        step = accept(state.get(key), part)
                        if step.pending is None:
                            state.pop(key, None)
                        else:
                            state[key] = step.pending
                        for reply in step.replies:
                            futures.append(
                                await producer.send(
                                    sink, reply.encode(), key=reply.reply_id.encode()
                                )
                            )
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
        await consumer.stop()


def render(results: list[dict[str, Any]]) -> Table:
    table = Table(title="Reassembly: callbacks/s from a pre-loaded raw topic (8 partitions)")
    columns = (
        "load",
        "processor",
        "callbacks",
        "parts/record",
        "replies",
        "window s",
        "callbacks/s",
        "CPU s",
        "x raw",
        "x 1 raw",
        "x quix",
        "load avg",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("load", "processor") else "right")
    for r in results:
        table.add_row(
            r.get("load", "multipart"),
            r["processor"],
            f"{r['parts']:,}",
            str(r.get("parts_per_record", 1.0)),
            f"{r['replies']:,}",
            str(r.get("window_s", "-")),
            f"{r['parts_per_s']:,}" if r.get("parts_per_s") else "-",
            str(r["cpu_s"]),
            str(r.get("ratio", "-")),
            str(r.get("ratio_single", "-")),
            str(r.get("ratio_quix", "-")),
            str(r.get("load_avg", "-")),
        )
    return table


def summarize_profile(path: Path, top: int = 25) -> list[tuple[str, float, float]]:
    """(function, self %, inclusive %) from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return [
        (frame, 100 * own[frame] / total, 100 * inclusive[frame] / total)
        for frame, _ in inclusive.most_common(top)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", type=int, default=DEFAULT_PARTS)
    parser.add_argument("--bootstrap", help="an already running broker (default: embedded)")
    parser.add_argument("--profile", type=Path, help="py-spy raw output for the worker")
    parser.add_argument("--only", choices=PROCESSORS, action="append")
    parser.add_argument("--load", choices=LOADS, action="append", help="default: all")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=INGRESS_CONCURRENCY,
        help="callbacks in flight at the ingress while the topic is filled",
    )
    parser.add_argument("--raw-loop", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_loop:
        bootstrap, source, sink, partitions = args.raw_loop
        asyncio.run(raw_loop(bootstrap, source, sink, [int(p) for p in partitions.split(",")]))
        return
    processors = tuple(args.only) if args.only else PROCESSORS
    loads = tuple(args.load) if args.load else tuple(LOADS)
    results = run(
        args.parts,
        bootstrap=args.bootstrap,
        profile=args.profile,
        processors=processors,
        loads=loads,
        concurrency=args.concurrency,
    )
    Console(width=120).print(render(results))
    for path in (args.profile, args.profile and args.profile.with_stem(f"{args.profile.stem}-1")):
        if path and path.exists():
            print(path)
            for frame, own, incl in summarize_profile(path):
                print(f"{own:5.1f} {incl:5.1f}  {frame}")


if __name__ == "__main__":
    main()
