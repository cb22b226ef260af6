"""``sms-replies run``: the whole pipeline on one machine, supervised.

Children: ingress, ``SMS_REPLIES_WORKER_PROCESSES`` workers (one consumer
group; worker i gets SMS_REPLIES_WORKER_INDEX=i and is named "worker",
"worker-1", ...) and sinks, each a ``python -m sms_replies`` process with the
same settings (passed as SMS_REPLIES_* variables), plus the embedded broker
when no bootstrap is given. A child that dies is restarted. Shutdown order
keeps every acknowledged reply: stop the ingress (no new 200s), wait until the
workers and the sinks have caught up, stop them, then the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import EmbeddedBroker
from sms_replies.broker.lag import group_lag
from sms_replies.broker.reseed import reseed_worker_state
from sms_replies.errors import SmsRepliesError
from sms_replies.health import worker_name
from sms_replies.ingest.app import CALLBACK_PATH
from sms_replies.procs import spawn, terminate
from sms_replies.settings import Settings, local_address
from sms_replies.sinks.runner import group_id

log = logging.getLogger(__name__)

RESTART_BACKOFF_MAX = 30.0
# A child that ran this long before dying starts again with no backoff.
HEALTHY_RUN_SECONDS = 60.0


@dataclass
class Child:
    name: str
    command: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        # Own process group: a terminal's Ctrl-C reaches only the supervisor,
        # which then stops the children in a safe order.
        self.process = spawn([sys.executable, "-m", "sms_replies", self.command], env=self.env)
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def terminate(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout``. Idempotent."""
        if self.process is not None and terminate(self.process, timeout):
            log.error("%s did not stop in %.0fs: it was killed", self.name, timeout)


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        *,
        on_ready: Callable[[str], None] = lambda url: None,
        drain_timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.on_ready = on_ready
        self.drain_timeout = drain_timeout
        self.broker: EmbeddedBroker | None = None
        self.children: dict[str, Child] = {}

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        if not settings.kafka_bootstrap:
            self.broker = EmbeddedBroker(settings.broker_host)
            bootstrap = self.broker.start()
            settings = settings.model_copy(
                update={"kafka_bootstrap": bootstrap, "kafka_embedded": True}
            )
            self.settings = settings
        try:
            await ensure_topics(
                settings.bootstrap,
                settings.topics,
                partitions=settings.topic_partitions,
                replication_factor=settings.replication_factor,
            )
            if self.broker is not None:
                # A fresh in-memory broker: give it back the state the workers kept on disk.
                await reseed_worker_state(settings)
            env = {**os.environ, **settings.as_env()}
            children = [
                Child(worker_name(i), "worker", {**env, "SMS_REPLIES_WORKER_INDEX": str(i)})
                for i in range(settings.worker_processes)
            ] + [Child(command, command, env) for command in ("sinks", "ingest", "api")]
            for child in children:
                self.children[child.name] = child
                child.start()
            await self._announce()
            await self._supervise(stop)
        finally:
            await self.shutdown()

    async def _announce(self) -> None:
        s = self.settings
        base = f"http://{s.http_host}:{s.http_port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"{base}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        token = f"?token={s.callback_token.get_secret_value()}" if s.callback_token else ""
        where = "embedded broker" if s.kafka_embedded else "broker"
        log.info("%s at %s; DuckDB store at %s", where, s.kafka_bootstrap, s.duckdb_path)
        log.info("dashboard: http://%s:%d/dashboard/", local_address(s.api_host), s.api_port)
        self.on_ready(f"{base}{CALLBACK_PATH}{token}")

    async def _supervise(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.broker is not None and self.broker.exit_code is not None:
                await self._restart_broker(stop)
            for child in self.children.values():
                if child.exited:
                    code = child.process.returncode if child.process else None
                    if time.monotonic() - child.started_at > HEALTHY_RUN_SECONDS:
                        child.restarts = 0
                    delay = min(RESTART_BACKOFF_MAX, 2.0**child.restarts)
                    log.error("%s exited with %s; restarting in %.0fs", child.name, code, delay)
                    await asyncio.sleep(delay)
                    child.restarts += 1
                    child.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def _restart_broker(self, stop: asyncio.Event) -> None:
        """The embedded broker died (crash, OOM, kill) and what it held with it.

        Its clients cannot go on against an empty broker: stop them, start a new
        broker on the same port, re-create the topics, re-seed it from the
        workers' state on disk, start them again. The ingress is stopped first,
        so that no callback creates the raw topic with the broker's defaults.
        """
        assert self.broker is not None
        s = self.settings
        log.error(
            "embedded broker on %s exited with %s: restarting it, then the ingress, "
            "workers and sinks (callbacks are refused meanwhile)",
            s.kafka_bootstrap,
            self.broker.exit_code,
        )
        dependent = [c for c in self.children.values() if c.command != "api"]
        # Short: a worker cannot stop cleanly without its broker, and its state is
        # safe from a SIGKILL (RocksDB's write-ahead log).
        await asyncio.gather(*(asyncio.to_thread(c.terminate, 5) for c in dependent))
        delay = 1.0
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.broker.start)
                await ensure_topics(
                    s.bootstrap,
                    s.topics,
                    partitions=s.topic_partitions,
                    replication_factor=s.replication_factor,
                )
                await reseed_worker_state(s)
                break
            except SmsRepliesError as exc:
                log.error("embedded broker restart failed (%s); again in %.0fs", exc, delay)
                self.broker.stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(RESTART_BACKOFF_MAX, delay * 2)
        if stop.is_set():
            return
        for child in dependent:
            child.start()
        log.warning("embedded broker restarted on %s; its clients restarted", s.kafka_bootstrap)

    async def shutdown(self) -> None:
        """Ingress first, drain, then workers and sinks, then the broker. Idempotent."""
        for front in ("ingest", "api"):
            if front in self.children:
                self.children[front].terminate(timeout=30)
        if self.children and self.settings.kafka_embedded:
            # In-memory broker: whatever is not in the store when it stops is gone.
            await self._drain()
        # All at once: a worker stopped alone would first take over the others' partitions.
        back = [c for c in self.children.values() if c.command in ("worker", "sinks")]
        await asyncio.gather(*(asyncio.to_thread(c.terminate, 60) for c in back))
        self.children.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    async def _drain(self) -> None:
        s = self.settings
        groups = [(s.worker_id, s.topics.raw)] + [
            (group_id(s.topic_prefix, name), s.topics.replies) for name in s.sinks
        ]
        deadline = time.monotonic() + self.drain_timeout
        lag = -1
        while time.monotonic() < deadline:
            try:
                lags = [await group_lag(s.bootstrap, g, t) for g, t in groups]
            except Exception as exc:  # a broken broker: nothing more to drain
                log.warning("cannot measure lag (%s); stopping without draining", exc)
                return
            lag = sum(lags)
            if lag == 0:
                log.info("drained: worker and sinks are up to date")
                return
            log.info("draining: %d records still to process", lag)
            await asyncio.sleep(1.0)
        log.error("drain timed out with %d records unprocessed", lag)


def run_pipeline(settings: Settings, on_ready: Callable[[str], None]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Pipeline(settings, on_ready=on_ready).run(stop)

    asyncio.run(main())
