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
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import aiohttp

from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import EmbeddedBroker
from sms_replies.broker.lag import group_lag
from sms_replies.broker.reseed import reseed_worker_state
from sms_replies.errors import SmsRepliesError, StartFailed
from sms_replies.health import endpoints, worker_name
from sms_replies.preflight import preflight
from sms_replies.procs import spawn, terminate
from sms_replies.settings import Settings, local_address
from sms_replies.sinks.runner import group_id

log = logging.getLogger(__name__)

RESTART_BACKOFF_MAX = 30.0
#: Deaths of one child before the pipeline was first ready after which `run` gives up.
START_ATTEMPTS = 3
#: Lines of a child's stderr kept to say why it died.
STDERR_TAIL_LINES = 15
READINESS_PROBE_TIMEOUT = 2.0
#: Seconds between "waiting for ..." lines while the pipeline starts.
READINESS_REPORT_INTERVAL = 15.0
# A child that ran this long before dying starts again with no backoff.
HEALTHY_RUN_SECONDS = 60.0
#: The processes the drain waits for.
BACK = ("worker", "sinks")


@dataclass
class Child:
    name: str
    command: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0  # deaths in a row (reset after a healthy run)
    started_at: float = field(default=0.0)
    restart_at: float | None = None  # a dead child waiting for its backoff
    stderr_tail: deque[str] = field(default_factory=deque)
    output: threading.Thread | None = None  # copies its output to ours

    def start(self) -> None:
        # Own process group: a terminal's Ctrl-C reaches only the supervisor,
        # which then stops the children in a safe order.
        # Its stdout too goes to our stderr (Faust writes there): run's stdout is the banner.
        read_end, write_end = os.pipe()
        try:
            self.process = spawn(
                [sys.executable, "-m", "sms_replies", self.command],
                env=self.env,
                stdout=write_end,
                stderr=write_end,
            )
        finally:
            os.close(write_end)
        self.started_at = time.monotonic()
        self.restart_at = None
        self.stderr_tail = deque(maxlen=STDERR_TAIL_LINES)
        self.output = threading.Thread(
            target=_forward_stderr,
            args=(os.fdopen(read_end, "rb"), self.stderr_tail),
            name=f"{self.name}-stderr",
            daemon=True,
        )
        self.output.start()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    @property
    def exit_code(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def last_error(self) -> str:
        """The last lines it wrote to stderr (where a traceback ends up)."""
        lines = list(self.stderr_tail)
        return "\n".join(lines) if lines else "(nothing on stderr)"

    def terminate(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout``. Idempotent."""
        if self.process is not None and terminate(self.process, timeout):
            log.error("%s did not stop in %.0fs: it was killed", self.name, timeout)
        if self.output is not None:
            # Its last lines before ours: run's own last line is its verdict.
            self.output.join(timeout=5)


def _forward_stderr(pipe: IO[bytes], tail: deque[str]) -> None:
    """Copy a child's stderr to ours, keeping its last lines to say why it died."""
    out = getattr(sys.stderr, "buffer", None)
    with pipe:
        for line in iter(pipe.readline, b""):
            tail.append(line.decode("utf-8", "replace").rstrip())
            if out is not None:
                out.write(line)
                out.flush()
            else:
                sys.stderr.write(line.decode("utf-8", "replace"))


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        *,
        on_ready: Callable[[], None] = lambda: None,
        drain_timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.on_ready = on_ready
        self.drain_timeout = drain_timeout
        self.broker: EmbeddedBroker | None = None
        self.children: dict[str, Child] = {}

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        preflight(settings)  # before anything starts: a bad setting ends here, in one line
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
            await self._supervise(stop)
        finally:
            await self.shutdown()

    def _announce(self) -> None:
        s = self.settings
        where = "embedded broker" if s.kafka_embedded else "broker"
        log.info("%s at %s; DuckDB store at %s", where, s.kafka_bootstrap, s.duckdb_path)
        log.info("dashboard: http://%s:%d/dashboard/", local_address(s.api_host), s.api_port)
        log.info("ready: ingress, workers (own their partitions) and sinks")
        self.on_ready()

    def _readiness_checks(self) -> dict[str, tuple[str, bool]]:
        """name -> (URL, whether only a 200 counts): what must answer before the banner."""
        s = self.settings
        urls = endpoints(s)
        checks = {name: (url, True) for name, url in urls.items() if name != "sinks"}
        # A worker is ready once it owns its partitions (recovered), not merely up.
        for i in range(s.worker_processes):
            name = worker_name(i)
            checks[name] = (urls[name].replace("/healthz", "/readyz"), True)
        # The sinks are up once they answer (503 while a store is down is an outage,
        # which their health reports; replies wait in the broker meanwhile).
        checks["sinks"] = (urls["sinks"], False)
        return checks

    async def _not_ready(self, session: aiohttp.ClientSession) -> list[str]:
        """The components not ready yet, each with what it answered."""

        async def check(name: str, url: str, needs_ok: bool) -> str | None:
            try:
                async with session.get(url) as response:
                    if response.status == 200 or not needs_ok:
                        return None
                    return f"{name} ({response.status})"
            except (aiohttp.ClientError, TimeoutError):
                return f"{name} (not answering)"

        checks = self._readiness_checks()
        results = await asyncio.gather(*(check(n, u, ok) for n, (u, ok) in checks.items()))
        return [result for result in results if result is not None]

    async def _supervise(self, stop: asyncio.Event) -> None:
        """Restart children that die; announce once everything is ready; return on stop."""
        ready = False
        waiting_since = last_report = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=READINESS_PROBE_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                if self.broker is not None and self.broker.exit_code is not None:
                    await self._restart_broker(stop)
                self._restart_exited(ready)
                if not ready:
                    missing = await self._not_ready(session)
                    if not missing:
                        ready = True
                        self._announce()
                    elif time.monotonic() - last_report > READINESS_REPORT_INTERVAL:
                        last_report = time.monotonic()
                        log.info(
                            "waiting %.0fs for: %s",
                            last_report - waiting_since,
                            ", ".join(missing),
                        )
                # The stop event cuts any wait short, a restart backoff included.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2 if not ready else 0.5)

    def _restart_exited(self, ready: bool) -> None:
        """Schedule dead children for a restart after their backoff; start those due."""
        now = time.monotonic()
        for child in self.children.values():
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.start()
                continue
            if not child.exited:
                continue
            if now - child.started_at > HEALTHY_RUN_SECONDS:
                child.restarts = 0
            child.restarts += 1
            if not ready and child.restarts >= START_ATTEMPTS:
                log.error(
                    "%s exited with %s, %d times before the pipeline was ready; "
                    "its last lines:\n%s",
                    child.name,
                    child.exit_code,
                    child.restarts,
                    child.last_error(),
                )
                last_line = child.last_error().splitlines()[-1]
                raise StartFailed(
                    f"{child.name} exited {child.restarts} times before the pipeline was "
                    f"ready (last exit code {child.exit_code}): {last_line}"
                )
            delay = min(RESTART_BACKOFF_MAX, 2.0 ** (child.restarts - 1))
            log.error(
                "%s exited with %s (%d in a row); restarting in %.0fs; its last lines:\n%s",
                child.name,
                child.exit_code,
                child.restarts,
                delay,
                child.last_error(),
            )
            child.restart_at = now + delay

    async def _restart_broker(self, stop: asyncio.Event) -> None:
        """The embedded broker died (crash, OOM, kill) and what it held with it.

        Its clients cannot go on against an empty broker: stop them, start a new
        broker on the same port, re-create the topics, re-seed it from the
        workers' state on disk, start them again. The ingress is stopped too, so
        that no callback creates the raw topic with the broker's defaults.
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
        # Neither the ingress nor a worker can stop cleanly without its broker; the
        # ingress holds nothing and the worker's state is safe from a SIGKILL
        # (RocksDB's write-ahead log). A sink may write the batch it holds.
        grace = {"sinks": 5.0}
        await asyncio.gather(
            *(asyncio.to_thread(c.terminate, grace.get(c.command, 1.0)) for c in dependent)
        )
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
        # The ingress first, alone: callbacks are accepted again as soon as it is up,
        # while the workers and the sinks start (seconds on a busy machine).
        for child in dependent:
            if child.command == "ingest":
                child.start()
        await self._wait_ingress(stop)
        for child in dependent:
            if child.command != "ingest":
                child.start()
        log.warning("embedded broker restarted on %s; its clients restarted", s.kafka_bootstrap)

    async def _wait_ingress(self, stop: asyncio.Event, limit: float = 30.0) -> None:
        url = endpoints(self.settings)["ingest"]
        deadline = time.monotonic() + limit
        timeout = aiohttp.ClientTimeout(total=READINESS_PROBE_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline and not stop.is_set():
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)

    async def shutdown(self) -> None:
        """Ingress first, drain, then workers and sinks, then the broker. Idempotent."""
        for front in ("ingest", "api"):
            if front in self.children:
                self.children[front].terminate(timeout=30)
        if self.children and self.settings.kafka_embedded:
            # In-memory broker: whatever is not in the store when it stops is gone.
            for child in self.children.values():
                if child.command in BACK and child.restart_at is not None:
                    log.info("starting %s now, without its backoff, to drain", child.name)
                    child.start()
            await self._drain()
        # All at once: a worker stopped alone would first take over the others' partitions.
        back = [c for c in self.children.values() if c.command in BACK]
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
            # A worker or sinks process that died now would never bring the lag down.
            dead = [c for c in self.children.values() if c.exited and c.command in BACK]
            if dead:
                for child in dead:
                    log.error(
                        "%s exited with %s during the drain; its last lines:\n%s",
                        child.name,
                        child.exit_code,
                        child.last_error(),
                    )
                log.error("cannot drain: what they had not processed is lost")
                return
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


def run_pipeline(settings: Settings, on_ready: Callable[[], None]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Pipeline(settings, on_ready=on_ready).run(stop)

    asyncio.run(main())
