"""Crashes: SIGKILL the worker or the sinks in the middle of a stream, restart them,
and the store holds every reply exactly once."""

from __future__ import annotations

import asyncio
import signal
import sys

import aiohttp
import pytest

from sms_replies.settings import Settings
from tests.integration.conftest import (
    Processes,
    read_rows,
    start_pipeline,
    wait_for_rows,
)

pytestmark = pytest.mark.integration

MESSAGES = 150


def part(number: int, part_no: int) -> dict[str, str]:
    return {
        "msisdn": f"336{number:08d}",
        "to": "33756781234",
        "messageId": f"m{number}-{part_no}",
        "concat": "true",
        "concat-ref": str(number % 256),
        "concat-total": "2",
        "concat-part": str(part_no),
        "text": f"<{number}.{part_no}>",
    }


async def post_all(url: str, bodies: list[dict[str, str]]) -> None:
    """Send like the provider: retry on anything but 200."""
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            for _ in range(100):
                try:
                    async with session.post(url, data=body) as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"never accepted: {body}")


@pytest.mark.timeout(240)
async def test_worker_killed_mid_stream_loses_no_pending_part(
    settings: Settings, processes: Processes
) -> None:
    url = await start_pipeline(processes, settings)

    # Every first part is pending in the worker's table when it is killed.
    await post_all(url, [part(n, 1) for n in range(MESSAGES)])
    await asyncio.sleep(4)  # processed and committed (commit interval 2.8 s)
    processes.stop("worker", signal.SIGKILL)
    processes.start("worker")
    # Second parts: half before, half after a second SIGKILL, mid-stream.
    half = MESSAGES // 2
    await post_all(url, [part(n, 2) for n in range(half)])
    processes.stop("worker", signal.SIGKILL)
    processes.start("worker")
    await post_all(url, [part(n, 2) for n in range(half, MESSAGES)])

    rows = await wait_for_rows(settings.duckdb_path, MESSAGES, timeout=150)
    await asyncio.sleep(3)
    rows = read_rows(settings.duckdb_path)
    assert len(rows) == MESSAGES
    assert sorted(r["text"] for r in rows) == sorted(f"<{n}.1><{n}.2>" for n in range(MESSAGES))
    assert all(r["complete"] and r["parts_received"] == 2 for r in rows)


@pytest.mark.timeout(240)
async def test_sinks_killed_and_store_locked_lose_nothing(
    settings: Settings, processes: Processes
) -> None:
    url = await start_pipeline(processes, settings)
    singles = [
        {"msisdn": f"336{n:08d}", "to": "33756781234", "messageId": f"s{n}", "text": f"r{n}"}
        for n in range(300)
    ]
    await post_all(url, singles[:100])
    processes.stop("sinks", signal.SIGKILL)
    await post_all(url, singles[100:200])
    # The store is unavailable: another process holds DuckDB's write lock.
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    locker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        # Holds the write lock until its stdin closes: no timing involved.
        "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
        "print('locked', flush=True); sys.stdin.read()",
        str(settings.duckdb_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert locker.stdin is not None
    assert locker.stdout is not None
    assert (await locker.stdout.readline()).strip() == b"locked"
    processes.start("sinks")
    await post_all(url, singles[200:])
    for _ in range(100):  # the restarted sink meets the lock and backs off
        if "retry in" in processes.log("sinks"):
            break
        await asyncio.sleep(0.2)
    assert "retry in" in processes.log("sinks")
    locker.stdin.close()
    await locker.wait()
    rows = await wait_for_rows(settings.duckdb_path, 300, timeout=120)
    assert sorted(r["text"] for r in rows) == sorted(f"r{n}" for n in range(300))
