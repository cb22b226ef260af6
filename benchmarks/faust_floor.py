"""The floor of a Faust stage on this machine: an agent that does nothing.

    python -m benchmarks.faust_floor [--parts 200000] [--load mixed] [--via ingress]

Pre-loads the same raw topic as ``benchmarks.reassembly`` (as the ingress writes
it: callbacks published together are one record per partition; ``--via
producer``: one part per record), then runs a Faust app with the worker's
settings whose agent only counts events (``events()``, then ``take_events()``
batches). An event is a raw record, one callback or a group of them: events/s
here bound any Faust agent over this topic, what the consumer thread, the
conductor and stream iteration cost before the agent does any work; per
callback that cost is divided by the parts per record. Not part of ``make
bench``; quoted in its findings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import (
    INGRESS_CONCURRENCY,
    Via,
    mixed_load,
    multipart_load,
    produce_parts,
)
from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import EmbeddedBroker, free_port
from sms_replies.settings import Settings

PARTITIONS = 8


def count_events(bootstrap: str, prefix: str, expected: int, mode: str, result: Path) -> None:
    """Child process: a Faust app whose agent counts ``expected`` events, then exits."""
    import logging

    import faust

    from sms_replies.streams.app import StreamsApp, faust_settings

    logging.basicConfig(level=logging.WARNING)
    settings = Settings.load(
        topic_prefix=prefix,
        topic_partitions=PARTITIONS,
        kafka_bootstrap=bootstrap,
        kafka_embedded=True,
        worker_id=f"{prefix}-floor-{mode}",
        data_dir=result.parent / f"data-{mode}",
        worker_web_port=free_port(),
    )
    settings.worker_state_dir.mkdir(parents=True, exist_ok=True)
    app = StreamsApp(settings.worker_id, **faust_settings(settings))
    app.tansu_bootstrap = bootstrap
    raw = app.topic(settings.topics.raw, partitions=PARTITIONS)
    seen = {"n": 0, "t0": 0.0}

    def done() -> None:
        seconds = time.perf_counter() - seen["t0"]
        cpu = os.times()
        result.write_text(f"{seen['n']} {seconds} {cpu.user + cpu.system}")
        os._exit(0)

    def count(n: int) -> None:
        if not seen["n"]:
            seen["t0"] = time.perf_counter()
        seen["n"] += n
        if seen["n"] >= expected:
            done()

    @app.agent(raw, name="floor")
    async def floor(stream: Any) -> None:
        if mode == "events":
            async for _ in stream.events():
                count(1)
        else:
            async for batch in stream.take_events(1000, within=0.02):
                count(len(batch))

    faust.Worker(app, loglevel="warning", override_logging=False).execute_from_commandline()


async def _run(
    bootstrap: str, parts: int, scratch: Path, workload: str, via: Via, concurrency: int
) -> list[dict[str, Any]]:
    load = multipart_load(parts) if workload == "multipart" else mixed_load(parts)
    prefix = f"floor-{uuid.uuid4().hex[:8]}"
    settings = Settings.load(topic_prefix=prefix, topic_partitions=PARTITIONS)
    await ensure_topics(bootstrap, settings.topics, partitions=PARTITIONS)
    filled = await produce_parts(
        bootstrap, settings.topics.raw, load.parts, via=via, concurrency=concurrency
    )
    results = []
    for mode in ("events", "take_events"):
        result = scratch / f"{mode}.txt"
        args = [bootstrap, prefix, str(filled.records), mode, str(result)]
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.faust_floor", "--child", *args
        )
        await asyncio.wait_for(child.wait(), 600)
        n, seconds, cpu = result.read_text().split()
        events = int(n)
        results.append(
            {
                "agent": mode,
                "load": workload,
                "fill": via,
                "parts_per_record": round(filled.parts_per_record, 2),
                "events": events,
                "events_per_s": round(events / float(seconds)),
                "callbacks_per_s": round(events * filled.parts_per_record / float(seconds)),
                "cpu_s": round(float(cpu), 1),
                # The whole process's CPU (start-up and group join too), as before.
                "cpu_us_per_event": round(1e6 * float(cpu) / events),
                "cpu_us_per_callback": round(1e6 * float(cpu) / filled.parts),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", type=int, default=200_000)
    parser.add_argument("--load", choices=("multipart", "mixed"), default="multipart")
    parser.add_argument("--via", choices=("ingress", "producer"), default="ingress")
    parser.add_argument("--concurrency", type=int, default=INGRESS_CONCURRENCY)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        bootstrap, prefix, expected, mode, result = args.child
        count_events(bootstrap, prefix, int(expected), mode, Path(result))
        return
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        rows = asyncio.run(
            _run(broker.bootstrap, args.parts, Path(tmp), args.load, args.via, args.concurrency)
        )
        for row in rows:
            print(row)


if __name__ == "__main__":
    main()
