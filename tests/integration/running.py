"""`sms-replies run` as a user starts it, and the ways it can be cut: helpers for the tests
of power cuts and broker deaths (and the power-cut measurement, tests/faults/power_cut.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil

from sms_replies.broker.embedded import free_port
from sms_replies.broker.lag import group_lag
from sms_replies.records import Topics
from sms_replies.sinks.runner import group_id
from tests.integration.conftest import wait_ready

PREFIX = "sms-replies"  # the defaults of a plain `run`
WORKER_GROUP = "sms-replies-reassembly"
TOKEN = "t0ken"


class Run:
    """One ``sms-replies run`` on ``data_dir``, its ports fixed across restarts."""

    def __init__(self, work_dir: Path, **env: str) -> None:
        self.work_dir = work_dir
        self.ports = {name: free_port() for name in ("HTTP", "API", "WORKER_WEB", "SINKS_WEB")}
        self.env = {
            **os.environ,
            **{f"SMS_REPLIES_{name}_PORT": str(port) for name, port in self.ports.items()},
            "SMS_REPLIES_DATA_DIR": str(work_dir / "data"),
            "SMS_REPLIES_CALLBACK_TOKEN": TOKEN,
            "SMS_REPLIES_SINK_BATCH_TIMEOUT": "0.2",
            **env,
        }
        self.env.pop("SMS_REPLIES_KAFKA_BOOTSTRAP", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports['HTTP']}"

    @property
    def callback_url(self) -> str:
        return f"{self.base}/callbacks/smspartner?token={TOKEN}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['API']}/health"

    @property
    def duckdb(self) -> Path:
        return self.work_dir / "data" / "replies.duckdb"

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"run-{self.starts}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def start(self, timeout: float = 90) -> None:
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sms_replies", "run"],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        await wait_ready(f"{self.base}/readyz", timeout=timeout)

    def tree(self) -> list[psutil.Process]:
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def broker(self) -> psutil.Process:
        """The embedded broker (Tansu) of the run."""
        for process in self.tree()[1:]:
            with_args = " ".join(process.cmdline())
            if "--listener-url" in with_args and process.status() != psutil.STATUS_ZOMBIE:
                return process
        raise LookupError("no embedded broker in the run's process tree")

    def bootstrap(self) -> str:
        args = self.broker().cmdline()
        return args[args.index("--listener-url") + 1].removeprefix("tcp://")

    def power_cut(self) -> int:
        """Every process of the run frozen, then killed, at once (no handler runs)."""
        processes = self.tree()
        for process in processes:
            process.send_signal(signal.SIGSTOP)
        for process in processes:
            process.send_signal(signal.SIGKILL)
        psutil.wait_procs(processes, timeout=10)
        assert self.process is not None
        self.process.wait()
        return len(processes)

    def stop(self, timeout: float = 90) -> int | None:
        """Ctrl-C, as a user stops it; None if it was not running."""
        if self.process is None or self.process.poll() is not None:
            return None
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            for process in self.tree():
                process.kill()
            self.process.wait()
            raise

    async def lag(self) -> int:
        """Records the worker or the DuckDB sink have not processed yet."""
        topics = Topics.with_prefix(PREFIX)
        bootstrap = self.bootstrap()
        worker = await group_lag(bootstrap, WORKER_GROUP, topics.raw)
        sink = await group_lag(bootstrap, group_id(PREFIX, "duckdb"), topics.replies)
        return worker + sink

    async def wait_caught_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while await self.lag():
            if time.monotonic() > deadline:
                raise TimeoutError(f"still {await self.lag()} records to process")
            await asyncio.sleep(0.5)


def long_reply(sender: int, ref: int, total: int) -> list[dict[str, str]]:
    """The callbacks of the parts of one long reply, part 1 first."""
    return [
        {
            "msisdn": f"336{sender:08d}",
            "to": "33756781234",
            "messageId": f"m{sender}-{ref}-{part}",
            "concat": "true",
            "concat-ref": str(ref),
            "concat-total": str(total),
            "concat-part": str(part),
            "text": f"<{sender}.{part}>",
        }
        for part in range(1, total + 1)
    ]


def text_of(sender: int, total: int) -> str:
    return "".join(f"<{sender}.{part}>" for part in range(1, total + 1))


async def post(
    session: aiohttp.ClientSession, url: str, callbacks: list[dict[str, str]]
) -> list[int]:
    statuses: list[int] = []
    for body in callbacks:
        async with session.post(url, data=body) as response:
            statuses.append(response.status)
    return statuses
