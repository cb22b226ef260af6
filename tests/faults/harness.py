"""One fault-injection run: broker behind the proxy, the pipeline, the provider, the faults.

:func:`run` starts everything, delivers a seeded workload while injecting a
seeded schedule of faults, waits for quiescence and compares the DuckDB store
with the workload. It returns the figures of the run as a dict; ``ok`` says
whether the store held exactly the expected replies.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import free_port
from sms_replies.broker.lag import group_lag
from sms_replies.ingest.app import CALLBACK_PATH
from sms_replies.settings import Settings
from sms_replies.sinks.runner import group_id
from tests.faults.check import Verdict, compare, read_store
from tests.faults.cluster import COMMANDS, Pipeline, ProxiedBroker, StoreLock
from tests.faults.traffic import Expected, Provider, build_workload
from tests.integration.conftest import wait_ready

log = logging.getLogger("tests.faults")

FAULT_KINDS: Final = ("worker_kill", "ingest_kill", "sinks_kill", "broker_cut", "store_lock")


@dataclass
class FaultInjector:
    """Injects faults, kinds in a shuffled round-robin, seeded; one fault at a time per lane."""

    pipeline: Pipeline
    broker: ProxiedBroker
    store: Path
    gap: tuple[float, float] = (1.0, 4.0)
    cut_seconds: tuple[float, float] = (2.0, 5.0)
    lock_seconds: tuple[float, float] = (2.0, 6.0)
    restart_delay: tuple[float, float] = (0.0, 2.0)
    counts: Counter[str] = field(default_factory=Counter)
    events: list[dict[str, Any]] = field(default_factory=list)

    async def run(self, sending: asyncio.Task[Any], min_each: int, rng: random.Random) -> None:
        """One lane, until the sending is over and every kind ran ``min_each`` times."""
        while True:
            order = list(FAULT_KINDS)
            rng.shuffle(order)
            for kind in order:
                await asyncio.sleep(rng.uniform(*self.gap))
                await self.inject(kind, rng)
                if sending.done() and min(self.counts[k] for k in FAULT_KINDS) >= min_each:
                    return

    async def inject(self, kind: str, rng: random.Random) -> None:
        at = self.pipeline.elapsed()
        detail: dict[str, Any] = {}
        if kind.endswith("_kill"):
            command = kind.removesuffix("_kill")
            pause = rng.uniform(*self.restart_delay)
            self.pipeline.kill(command)
            await asyncio.sleep(pause)
            self.pipeline.ensure(command)
            detail["down_s"] = round(pause, 2)
        elif kind == "broker_cut":
            seconds = rng.uniform(*self.cut_seconds)
            detail["connections_dropped"] = await self.broker.proxy.cut()
            await asyncio.sleep(seconds)
            await self.broker.proxy.restore()
            detail["down_s"] = round(seconds, 2)
        elif kind == "store_lock":
            seconds = rng.uniform(*self.lock_seconds)
            lock = StoreLock(self.store)
            await lock.acquire(seconds)
            try:
                await asyncio.sleep(seconds)
            finally:
                await lock.release()
            detail["down_s"] = round(seconds, 2)
        else:
            raise ValueError(kind)
        self.counts[kind] += 1
        self.events.append({"at_s": round(at, 1), "kind": kind, **detail})
        log.info("fault %-11s at +%.1fs %s", kind, at, detail)


@dataclass
class Quiescence:
    verdict: Verdict
    reached: bool
    seconds: float | None  # from the end of the faults to a correct store with no lag
    lags: dict[str, int]


async def _lags(settings: Settings) -> dict[str, int]:
    groups = {
        "worker": (settings.worker_id, settings.topics.raw),
        **{
            f"sink.{name}": (group_id(settings.topic_prefix, name), settings.topics.replies)
            for name in settings.sinks
        },
    }
    return {
        name: await group_lag(settings.bootstrap, group, topic)
        for name, (group, topic) in groups.items()
    }


async def wait_quiescence(
    expected: list[Expected],
    settings: Settings,
    *,
    since: float,
    timeout: float,
    settle: float,
) -> Quiescence:
    """Until the store is right, nothing is left to consume, and it stays so for ``settle``."""
    deadline = time.monotonic() + timeout
    lags: dict[str, int] = {}
    verdict = compare(expected, [])
    polls = 0
    while time.monotonic() < deadline:
        polls += 1
        rows = await asyncio.to_thread(read_store, settings.duckdb_path)
        verdict = compare(expected, rows or [])
        if not verdict.missing and not verdict.ok:
            # Every reply is there and more: rows are never deleted, it cannot get better.
            return Quiescence(verdict, reached=False, seconds=None, lags=lags)
        if verdict.ok:
            try:
                lags = await _lags(settings)
            except Exception as exc:
                log.info("lag not measurable yet: %r", exc)
                lags = {}
            if lags and not any(lags.values()):
                reached_at = time.monotonic()
                await asyncio.sleep(settle)
                rows = await asyncio.to_thread(read_store, settings.duckdb_path)
                verdict = compare(expected, rows or [])
                return Quiescence(
                    verdict,
                    reached=verdict.ok,
                    seconds=round(reached_at - since, 1),
                    lags=lags,
                )
        elif polls % 5 == 1:
            log.info(
                "waiting: %d/%d replies in the store",
                len(expected) - len(verdict.missing),
                len(expected),
            )
        await asyncio.sleep(1.0)
    return Quiescence(verdict, reached=False, seconds=None, lags=lags)


async def run_async(
    callbacks: int = 5000,
    *,
    seed: int = 1,
    rate: float = 60.0,
    concurrency: int = 32,
    duplicate_rate: float = 0.1,
    min_each: int = 1,
    lanes: int = 1,
    fault_gap: tuple[float, float] = (1.0, 4.0),
    partitions: int = 4,
    quiescence_timeout: float = 240.0,
    settle: float = 5.0,
    work_dir: Path,
) -> dict[str, Any]:
    started = time.monotonic()
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    broker = ProxiedBroker(log_dir)
    broker.start()
    settings = Settings.load(
        kafka_bootstrap=broker.bootstrap,
        kafka_embedded=True,
        topic_prefix=f"faults-{tag}",
        worker_id=f"faults-{tag}-reassembly",
        topic_partitions=partitions,
        http_port=free_port(),
        worker_web_port=free_port(),
        sinks_web_port=free_port(),
        api_port=free_port(),
        data_dir=work_dir / "data",
        sinks=["duckdb"],
        sink_batch_timeout=0.2,
        publish_timeout=2.0,
        # Nothing may expire during the run: every reply must arrive complete.
        reassembly_timeout=3600.0,
        log_level="INFO",
    )
    pipeline = Pipeline(settings, log_dir)
    stop_supervising = asyncio.Event()
    supervisor: asyncio.Task[None] | None = None
    try:
        await ensure_topics(settings.bootstrap, settings.topics, partitions=partitions)
        for command in COMMANDS:
            pipeline.start(command)
        supervisor = asyncio.create_task(pipeline.supervise(stop_supervising))
        base = f"http://{settings.http_host}:{settings.http_port}"
        await wait_ready(f"{base}/readyz", timeout=60.0)
        workload = build_workload(callbacks, seed, duplicate_rate=duplicate_rate, run_tag=tag[:4])
        log.info(
            "seed %d: %d callbacks for %d replies %s; logs in %s",
            seed,
            len(workload.callbacks),
            len(workload.expected),
            dict(workload.shapes),
            log_dir,
        )
        provider = Provider(f"{base}{CALLBACK_PATH}", rate=rate, concurrency=concurrency, seed=seed)
        injector = FaultInjector(
            pipeline,
            broker,
            settings.duckdb_path,
            gap=fault_gap,
        )
        send_started = time.monotonic()
        sending = asyncio.create_task(provider.deliver_all(workload.callbacks))
        # Lanes > 1: faults overlap (a worker killed during a broker cut...).
        faults = asyncio.gather(
            *(
                injector.run(sending, min_each, random.Random(seed + 1 + lane))
                for lane in range(lanes)
            )
        )
        stats = await sending
        send_seconds = time.monotonic() - send_started
        log.info(
            "all callbacks acknowledged after %.1fs; faults go on until each kind ran", send_seconds
        )
        await faults
        for command in COMMANDS:  # the last fault restarted its victim: all up
            pipeline.ensure(command)
        last_ack = stats.last_accepted_at or time.monotonic()
        left_alone = time.monotonic()  # last ack and last fault are behind us
        quiet = await wait_quiescence(
            workload.expected,
            settings,
            since=left_alone,
            timeout=quiescence_timeout,
            settle=settle,
        )
        duration = time.monotonic() - started
        delivered_ok = not stats.refused and not stats.undelivered
        return {
            "ok": quiet.reached and quiet.verdict.ok and delivered_ok,
            "seed": seed,
            "callbacks": len(workload.callbacks),
            "duplicate_deliveries": sum(c.duplicate for c in workload.callbacks),
            "replies_expected": len(workload.expected),
            "shapes": dict(sorted(workload.shapes.items())),
            "rate_per_s": rate,
            "http_attempts": stats.attempts,
            "http_503": stats.status_503,
            "connection_errors": stats.connection_errors,
            "other_statuses": dict(stats.other_statuses),
            "refused": [(s, c.fields) for s, c in stats.refused[:5]],
            "undelivered": len(stats.undelivered),
            "max_attempts_one_callback": stats.max_attempts_one_callback,
            "faults": {kind: injector.counts[kind] for kind in FAULT_KINDS},
            "faults_total": sum(injector.counts.values()),
            "fault_lanes": lanes,
            "fault_events": injector.events,
            "unexpected_exits": [vars(e) for e in pipeline.unexpected_exits],
            "process_starts": dict(pipeline.starts),
            "proxy_connections_dropped": broker.proxy.connections_dropped,
            "send_duration_s": round(send_seconds, 1),
            "last_fault_after_last_ack_s": round(max(0.0, left_alone - last_ack), 1),
            "time_to_quiescence_s": quiet.seconds,
            "duration_s": round(duration, 1),
            "final_lags": quiet.lags,
            "store": quiet.verdict.summary(),
            "work_dir": str(work_dir),
        }
    finally:
        stop_supervising.set()
        if supervisor is not None:
            await supervisor
        pipeline.stop_all()
        broker.stop()


def run(
    callbacks: int = 5000,
    *,
    work_dir: Path | None = None,
    keep: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Run the suite; returns its figures (``figures["ok"]``: the store was exactly right).

    Without ``work_dir`` a temporary one is made, and removed after a passing
    run unless ``keep``. ``options``: see :func:`run_async`.
    """
    own_dir = work_dir is None
    directory = Path(tempfile.mkdtemp(prefix="sms-faults-")) if work_dir is None else work_dir
    figures = asyncio.run(run_async(callbacks, work_dir=directory, **options))
    if own_dir and figures["ok"] and not keep:
        shutil.rmtree(directory, ignore_errors=True)
        figures["work_dir"] = None
    return figures
