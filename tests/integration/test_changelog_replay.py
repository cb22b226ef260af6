"""A worker killed between its store write and its changelog record, then replayed,
then taken over by another worker: the changelog must hold what the store held.

Without it the replayed part is a duplicate locally (the store already has it),
so its changelog record was never sent, and the worker that took over rebuilt
the table without it: the reply never completed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sms_replies.procs import spawn
from sms_replies.settings import Settings
from tests.integration.conftest import Processes, read_rows, wait_for_rows, wait_ready
from tests.integration.crash_after_store import CRASHED
from tests.integration.test_crash_recovery import post_all

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def part(number: int) -> dict[str, str]:
    return {
        "msisdn": "33612345678",
        "to": "33756781234",
        "messageId": f"replay-{number}",
        "concat": "true",
        "concat-ref": "42",
        "concat-total": "2",
        "concat-part": str(number),
        "text": f"<{number}>",
    }


async def duplicates_handled(metrics_url: str) -> float:
    try:
        async with aiohttp.ClientSession() as session, session.get(metrics_url) as response:
            text = await response.text()
    except aiohttp.ClientError:
        return 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sms_replies_parts_processed_total" and sample.labels == {
                "result": "duplicate"
            }:
                return sample.value
    return 0.0


@pytest.mark.timeout(300)
async def test_a_part_replayed_after_a_crash_between_store_and_changelog_survives_a_take_over(
    settings: Settings, processes: Processes
) -> None:
    # One worker at a time, on the same port: the first crashes and is replayed,
    # then another, with a state directory of its own, takes over.
    env = {
        **os.environ,
        **settings.as_env(),
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
    }
    with (processes.log_dir / "crashing-worker.log").open("ab") as log:
        crashing = spawn(
            [sys.executable, "-m", "tests.integration.crash_after_store", "worker"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
    processes.children["crashing-worker"] = crashing
    processes.start("sinks")
    processes.start("ingest")
    url = f"http://{settings.http_host}:{settings.http_port}/callbacks/smspartner"
    await wait_ready(url.replace("/callbacks/smspartner", "/readyz"))

    # Part 1 (answered 200) reaches worker 0: its state is in RocksDB, then it dies.
    await post_all(url, [part(1)])
    deadline = time.monotonic() + 90
    while crashing.poll() is None:
        assert time.monotonic() < deadline, "the worker never reached its changelog send"
        await asyncio.sleep(0.2)
    assert crashing.returncode == CRASHED
    processes.children.pop("crashing-worker")

    # Restarted on the same state, it replays part 1: a duplicate for its store.
    processes.start("worker", "worker-0")
    metrics_url = f"http://127.0.0.1:{settings.worker_web_port}/metrics"
    deadline = time.monotonic() + 90
    while await duplicates_handled(metrics_url) < 1:
        assert time.monotonic() < deadline, "the replayed part was never handled"
        await asyncio.sleep(0.5)
    await asyncio.sleep(4)  # its offset committed (commit interval 2.8 s)
    processes.stop("worker-0", signal.SIGTERM)

    # Another worker, with no state of its own, takes over from the changelog.
    elsewhere = processes.log_dir / "other-worker-data"
    processes.start("worker", "worker-1", SMS_REPLIES_DATA_DIR=str(elsewhere))
    await wait_ready(f"http://127.0.0.1:{settings.worker_web_port}/readyz", timeout=90)
    assert not (elsewhere / "worker" / "0").samefile(settings.worker_state_dir)
    await post_all(url, [part(2)])
    await wait_for_rows(settings.duckdb_path, 1, timeout=90)
    await asyncio.sleep(3)  # a second row would show by now
    rows = read_rows(settings.duckdb_path)
    assert [(r["text"], r["complete"], r["parts_received"]) for r in rows] == [("<1><2>", True, 2)]
