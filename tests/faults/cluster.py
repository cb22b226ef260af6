"""The system under test: Tansu behind the fault proxy, and the pipeline's processes.

* :class:`ProxiedBroker`: Tansu (memory storage) listening on a private port
  and *advertising the proxy's port*, so that every client connection, not
  only the bootstrap one, goes through :class:`~tests.faults.proxy.FaultProxy`.
  It is never restarted during a run: it keeps everything in RAM.
* :class:`Pipeline`: ``python -m sms_replies ingest|worker|sinks`` children
  with the run's settings, SIGKILLed and restarted on demand, and restarted
  (like ``sms-replies run`` does) when one exits on its own.
* :class:`StoreLock`: another process holding DuckDB's write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sms_replies.broker.embedded import broker_binary, free_port
from sms_replies.procs import spawn
from sms_replies.settings import Settings
from tests.faults.proxy import FaultProxy

log = logging.getLogger(__name__)

COMMANDS = ("worker", "sinks", "ingest")


class ProxiedBroker:
    """Tansu on ``host:<private port>``, reachable (and advertised) only through the proxy."""

    def __init__(self, log_dir: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.log_dir = log_dir
        self.listen_port = free_port(host)
        self.proxy = FaultProxy((host, self.listen_port), host=host)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """What the pipeline is given: the proxy's address."""
        return self.proxy.address

    def start(self, timeout: float = 15.0) -> None:
        self.proxy.start()  # fixes the proxy's port, which the broker advertises
        listener = f"tcp://{self.host}:{self.listen_port}"
        advertised = f"tcp://{self.proxy.address}"
        with (self.log_dir / "broker.log").open("ab") as out:
            self._process = spawn(
                [
                    broker_binary(),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    advertised,
                ],
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"broker exited with code {self._process.returncode}")
            try:
                with socket.create_connection((self.host, self.listen_port), timeout=0.5):
                    log.info("broker on %s, advertised as %s", listener, advertised)
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"broker did not listen on {listener} in {timeout}s")

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop the proxy and the broker. Idempotent."""
        self.proxy.stop()
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Exit:
    """A child that exited without being told to."""

    command: str
    code: int | None
    at_s: float


@dataclass
class Pipeline:
    """The pipeline's children. Start, SIGKILL and restart them from the event loop's thread.

    (``procs.spawn`` sets PR_SET_PDEATHSIG, which fires when the *thread* that
    forked the child ends: never spawn from a worker thread.)
    """

    settings: Settings
    log_dir: Path
    started_at: float = field(default_factory=time.monotonic)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    unexpected_exits: list[Exit] = field(default_factory=list)
    starts: dict[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        # The harness's own SMS_REPLIES_* variables must not leak into the children.
        base = {k: v for k, v in os.environ.items() if not k.startswith("SMS_REPLIES_")}
        return {**base, **self.settings.as_env()}

    def start(self, command: str) -> None:
        with (self.log_dir / f"{command}.log").open("ab") as out:
            out.write(f"\n===== start {command} at +{self.elapsed():.1f}s =====\n".encode())
            out.flush()
            self.children[command] = spawn(
                [sys.executable, "-m", "sms_replies", command],
                env=self.env(),
                stdout=out,
                stderr=out,
            )
        self.starts[command] = self.starts.get(command, 0) + 1

    def ensure(self, command: str) -> bool:
        """Start the child unless it is running; True if it was started."""
        if self.running(command):
            return False
        self.children.pop(command, None)
        self.start(command)
        return True

    def kill(self, command: str) -> None:
        """SIGKILL the child (its whole process group) and reap it."""
        child = self.children.pop(command, None)
        if child is None:
            return
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        child.wait()

    def check(self) -> list[Exit]:
        """Children that exited on their own since the last call (they are forgotten)."""
        exits: list[Exit] = []
        for command, child in list(self.children.items()):
            code = child.poll()
            if code is not None:
                del self.children[command]
                exits.append(Exit(command, code, round(self.elapsed(), 1)))
        self.unexpected_exits.extend(exits)
        return exits

    async def supervise(self, stop: asyncio.Event, delay: float = 1.0) -> None:
        """Restart children that exit on their own, as ``sms-replies run`` does."""
        while not stop.is_set():
            for exit_ in self.check():
                log.error("%s exited on its own with %s: restarting", exit_.command, exit_.code)
                await asyncio.sleep(delay)
                self.ensure(exit_.command)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    def running(self, command: str) -> bool:
        child = self.children.get(command)
        return child is not None and child.poll() is None

    def stop_all(self, timeout: float = 30.0) -> None:
        """SIGTERM in a safe order (ingress first), then SIGKILL after ``timeout``."""
        for command in ("ingest", "worker", "sinks"):
            child = self.children.pop(command, None)
            if child is None:
                continue
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.error("%s did not stop in %.0fs: killing it", command, timeout)
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at


_LOCKER = """
import sys, time
from pathlib import Path
import duckdb
from sms_replies.analytics.store import lend_store
# The DuckDB sink owns the store while it runs: it must lend it first.
lend_store(Path(sys.argv[1]), float(sys.argv[2]))
deadline = time.monotonic() + 30
while True:
    try:
        con = duckdb.connect(sys.argv[1])
        break
    except duckdb.Error:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.01)
print("locked", flush=True)
sys.stdin.readline()
con.close()
"""


class StoreLock:
    """Another process holding DuckDB's write lock: the store is unavailable to the sink."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._process: asyncio.subprocess.Process | None = None

    async def acquire(self, seconds: float, timeout: float = 30.0) -> None:
        """Hold the lock for about ``seconds`` (the sink lends the store that long)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _LOCKER,
            str(self.path),
            str(seconds),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        if line.strip() != b"locked":
            await self.release()
            raise RuntimeError(f"store locker failed: {line!r}")

    async def release(self) -> None:
        """Let go of the lock (and reap the process). Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None and process.stdin is not None:
            process.stdin.write(b"\n")
            with contextlib.suppress(ConnectionError):
                await process.stdin.drain()
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
