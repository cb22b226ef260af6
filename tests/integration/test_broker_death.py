"""The embedded broker dies (crash, OOM, kill): noticed, reported, restarted with what
depends on it, and callbacks are accepted and stored again without a manual restart."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import EmbeddedBroker
from sms_replies.ingest.app import create_app
from sms_replies.settings import Settings
from tests.integration.conftest import read_rows, wait_for_rows
from tests.integration.running import Run, long_reply, post, text_of

pytestmark = pytest.mark.integration

#: Bounds of the restart (measured: see the report printed by the test).
NOTICED_WITHIN_S = 5
ACCEPTING_AGAIN_WITHIN_S = 60


async def test_readyz_fails_when_the_broker_is_gone(tmp_path: Path) -> None:
    own = EmbeddedBroker()
    own.start()
    settings = Settings.load(
        kafka_bootstrap=own.bootstrap,
        topic_prefix=f"ready-{uuid.uuid4().hex[:6]}",
        data_dir=tmp_path,
    )
    try:
        await ensure_topics(settings.bootstrap, settings.topics, partitions=1)
        async with TestClient(TestServer(create_app(settings))) as client:
            assert (await client.get("/readyz")).status == 200
            assert own.pid is not None
            psutil.Process(own.pid).send_signal(signal.SIGKILL)
            started = time.monotonic()
            response = await client.get("/readyz")
            assert response.status == 503
            assert time.monotonic() - started < 5
            assert (await response.json())["status"] == "broker unavailable"
    finally:
        own.stop()


async def health(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url) as response:
        return response.status, await response.json()


@pytest.mark.timeout(400)
async def test_run_restarts_a_dead_broker_and_its_clients(tmp_path: Path) -> None:
    run = Run(tmp_path)
    half = long_reply(1, ref=1, total=2)
    whole = long_reply(2, ref=2, total=2)
    await run.start()
    try:
        async with aiohttp.ClientSession() as session:
            assert set(await post(session, run.callback_url, [half[0], *whole])) == {200}
            await wait_for_rows(run.duckdb, 1)
            await run.wait_caught_up()
            status, report = await health(session, run.health_url)
            assert (status, report["components"]["broker"]["up"]) == (200, True)

            broker = run.broker()
            broker.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            while True:
                status, report = await health(session, run.health_url)
                if not report["components"]["broker"]["up"]:
                    break
                assert time.monotonic() - killed < NOTICED_WITHIN_S, report
                await asyncio.sleep(0.2)
            noticed = time.monotonic() - killed
            assert status == 503
            statuses: list[int | str] = []
            while True:  # a provider retrying the second part
                try:
                    statuses += await post(session, run.callback_url, [half[1]])
                except aiohttp.ClientError as exc:
                    statuses.append(type(exc).__name__)
                if statuses[-1] == 200:
                    break
                assert time.monotonic() - killed < ACCEPTING_AGAIN_WITHIN_S, statuses
                await asyncio.sleep(0.5)
            accepting = time.monotonic() - killed
            assert not psutil.pid_exists(broker.pid)  # reaped, no zombie
            assert run.broker().pid != broker.pid
            # The long reply that straddled the broker's death is reassembled once, and a
            # retry of a part of the stored one makes no new row.
            assert await post(session, run.callback_url, [whole[0]]) == [200]
            await wait_for_rows(run.duckdb, 2)
            await run.wait_caught_up()
            rows = read_rows(run.duckdb)
            status, report = await health(session, run.health_url)
    finally:
        run.stop()
    print(f"broker death noticed in /health after {noticed:.1f}s, 200 again after {accepting:.1f}s")
    assert status == 200, report
    assert sorted((r["text"], r["complete"]) for r in rows) == [
        (text_of(1, 2), True),
        (text_of(2, 2), True),
    ]
    assert "embedded broker on" in run.log()
    assert "exited with -9" in run.log()
