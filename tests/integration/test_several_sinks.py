"""Several sinks at once: the same replies in each store; a failing sink blocks no other."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from sms_replies.broker.embedded import free_port
from sms_replies.settings import Settings
from tests.integration.conftest import Processes, wait_for_rows, wait_ready

pytestmark = pytest.mark.integration

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    schema = f"sinks_{uuid.uuid4().hex[:8]}"
    yield schema
    connection = await asyncpg.connect(PG_DSN)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def send_replies(settings: Settings, count: int) -> None:
    base = f"http://{settings.http_host}:{settings.http_port}"
    await wait_ready(f"{base}/readyz")
    async with aiohttp.ClientSession() as session:
        for n in range(count):
            body = {
                "msisdn": f"336{n:08d}",
                "to": "33756781234",
                "messageId": f"x{n}",
                "text": "Oui",
            }
            async with session.post(f"{base}/callbacks/smspartner", data=body) as response:
                assert response.status == 200


@pytest.mark.timeout(120)
async def test_duckdb_and_postgres_hold_the_same_replies(
    settings: Settings, processes: Processes, pg_schema: str
) -> None:
    processes.settings = settings.model_copy(update={"sinks": ["duckdb", "postgres"]})
    env = {"SMS_REPLIES_POSTGRES_DSN": PG_DSN, "SMS_REPLIES_POSTGRES_SCHEMA_NAME": pg_schema}
    processes.start("worker")
    processes.start("sinks", **env)
    processes.start("ingest")
    await send_replies(settings, 50)
    duck = await wait_for_rows(settings.duckdb_path, 50)
    connection = await asyncpg.connect(PG_DSN)
    try:
        for _ in range(100):
            pg = await connection.fetch(f'SELECT reply_id, sender, text FROM "{pg_schema}".replies')
            if len(pg) >= 50:
                break
            await asyncio.sleep(0.2)
    finally:
        await connection.close()
    assert {(r["reply_id"], r["sender"], r["text"]) for r in duck} == {
        (r["reply_id"], r["sender"], r["text"]) for r in pg
    }
    assert len(pg) == 50


@pytest.mark.timeout(120)
async def test_a_failing_sink_does_not_hold_back_duckdb(
    settings: Settings, processes: Processes
) -> None:
    processes.settings = settings.model_copy(update={"sinks": ["duckdb", "postgres"]})
    dead_port = free_port()  # nothing listens there: every PostgreSQL write fails
    env = {
        "SMS_REPLIES_POSTGRES_DSN": f"postgresql://postgres@127.0.0.1:{dead_port}/test",
        "SMS_REPLIES_POSTGRES_TIMEOUT": "1",
    }
    processes.start("worker")
    processes.start("sinks", **env)
    processes.start("ingest")
    await send_replies(settings, 30)
    rows = await wait_for_rows(settings.duckdb_path, 30, timeout=60)
    assert len(rows) == 30
    async with aiohttp.ClientSession() as session:
        url = f"http://{settings.http_host}:{settings.sinks_web_port}/healthz"
        async with session.get(url) as response:
            health = await response.json()
    assert response.status == 503
    assert health["duckdb"]["written"] == 30
    assert health["postgres"]["written"] == 0
    assert health["postgres"]["last_error"]
