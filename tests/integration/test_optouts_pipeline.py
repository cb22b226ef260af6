"""The opt-out list through the whole pipeline, as `sms-replies run` runs it, in every store.

Real processes (ingress, worker, sinks) on the embedded broker, the DuckDB,
PostgreSQL and ClickHouse 18.16 sinks at once, a pseudonymisation key: a STOP
then START then "Oui" from one number, a "Stop." from another, a short-number
stop, a lone "Oui". Each store's ``optouts`` table holds exactly the expected
rows, keyed by the same pseudonyms as ``replies``. (Out-of-order and replayed
batches: ``test_optouts_stores.py``.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from clickhouse_driver import Client
from pydantic import SecretStr

from sms_replies.analytics.store import open_reader
from sms_replies.privacy import pseudonymize
from sms_replies.settings import Settings
from sms_replies.stores.clickhouse import optouts_sql
from tests.clickhouse_server import LocalServer, clickhouse_server_binary, local_clickhouse_server
from tests.integration.conftest import Processes, wait_ready

pytestmark = pytest.mark.integration

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
KEY = "optouts-pipeline-key"
LONG = "33756781234"
A, B, C, D = "+33611111101", "+33611111102", "+33611111103", "+33611111104"
Rows = dict[str, tuple[str, str]]  # pseudonym -> (status, source)


def h(number: str) -> str:
    return pseudonymize(number, KEY.encode())


EXPECTED: Rows = {
    h(A): ("opted_in", "keyword"),
    h(B): ("opted_out", "text"),
    h(C): ("opted_out", "provider"),
}


@pytest.fixture(scope="module")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    if clickhouse_server_binary() is None:
        pytest.skip("clickhouse-server is not installed (apt-get install -y clickhouse-server)")
    with local_clickhouse_server(tmp_path_factory.mktemp("clickhouse")) as server:
        yield server


@pytest.fixture
async def names(clickhouse_server: LocalServer) -> AsyncIterator[str]:
    """One name for the PostgreSQL schema and the ClickHouse database; dropped after."""
    name = f"optouts_pipeline_{uuid.uuid4().hex[:10]}"
    yield name
    con = await asyncpg.connect(PG_DSN)
    try:
        await con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await con.close()
    client = Client(clickhouse_server.host, port=clickhouse_server.port)
    client.execute(f"DROP DATABASE IF EXISTS `{name}`")
    client.disconnect()


async def send(url: str) -> None:
    callbacks: list[tuple[str, dict[str, Any]]] = [
        ("form", {"msisdn": A[1:], "to": LONG, "messageId": "a1", "text": "STOP"}),
        ("form", {"msisdn": B[1:], "to": LONG, "messageId": "b1", "text": "Stop."}),
        ("form", {"msisdn": A[1:], "to": LONG, "messageId": "a2", "text": "Start"}),
        ("json", {"type": "stop", "phone_number": C, "text": "", "message_id": 7}),
        ("form", {"msisdn": D[1:], "to": LONG, "messageId": "d1", "text": "Oui"}),
        ("form", {"msisdn": A[1:], "to": LONG, "messageId": "a3", "text": "Oui"}),
    ]
    async with aiohttp.ClientSession() as session:
        for kind, fields in callbacks:
            body = {"json": fields} if kind == "json" else {"data": fields}
            async with session.post(url, **body) as response:
                assert response.status == 200, await response.text()
            await asyncio.sleep(0.01)  # distinct received_at: the order is the senders'


async def poll(read: Any, want: int, timeout: float = 90) -> Any:
    """``await read()`` until it returns ``want`` replies (then its optouts)."""
    deadline = time.monotonic() + timeout
    while True:
        count, optouts = await read()
        if count >= want or time.monotonic() > deadline:
            assert count == want
            return optouts
        await asyncio.sleep(0.3)


@pytest.mark.timeout(180)
async def test_every_store_keeps_the_same_opt_out_list(
    settings: Settings, processes: Processes, clickhouse_server: LocalServer, names: str
) -> None:
    processes.settings = settings.model_copy(
        update={
            "sinks": ["duckdb", "postgres", "clickhouse"],
            "pseudonymize_key": SecretStr(KEY),
        }
    )
    env = {
        "SMS_REPLIES_POSTGRES_DSN": PG_DSN,
        "SMS_REPLIES_POSTGRES_SCHEMA_NAME": names,
        "SMS_REPLIES_CLICKHOUSE_HOST": clickhouse_server.host,
        "SMS_REPLIES_CLICKHOUSE_PORT": str(clickhouse_server.port),
        "SMS_REPLIES_CLICKHOUSE_DATABASE": names,
    }
    for command in ("worker", "sinks", "ingest"):
        processes.start(command, **env)
    base = f"http://{settings.http_host}:{settings.http_port}"
    await wait_ready(f"{base}/readyz")
    await send(f"{base}/callbacks/smspartner")

    async def duckdb_rows() -> tuple[int, Rows]:
        with open_reader(settings.duckdb_path) as con:
            (count,) = con.execute("SELECT count(*) FROM replies").fetchone() or (0,)
            if count == 0:  # the sink may not have made its tables yet
                return 0, {}
            rows = con.execute("SELECT sender, status, source FROM optouts").fetchall()
        return int(count), {s: (st, src) for s, st, src in rows}

    async def postgres_rows() -> tuple[int, Rows]:
        con = await asyncpg.connect(PG_DSN)
        try:
            if await con.fetchval("SELECT to_regclass($1)", f'"{names}".replies') is None:
                return 0, {}
            count = await con.fetchval(f'SELECT count(*) FROM "{names}".replies')
            rows = await con.fetch(f'SELECT sender, status, source FROM "{names}".optouts')
        finally:
            await con.close()
        return int(count), {r["sender"]: (r["status"], r["source"]) for r in rows}

    async def clickhouse_rows() -> tuple[int, Rows]:
        client = Client(clickhouse_server.host, port=clickhouse_server.port)
        try:
            tables = client.execute(
                "SELECT count() FROM system.tables WHERE database = %(d)s", {"d": names}
            )
            if tables[0][0] < 3:
                return 0, {}
            count = client.execute(f"SELECT count() FROM `{names}`.replies FINAL")[0][0]
            rows = client.execute(optouts_sql(names))
        finally:
            client.disconnect()
        return int(count), {s: (st, src) for s, st, _, _, src in rows}

    for read in (duckdb_rows, postgres_rows, clickhouse_rows):
        assert await poll(read, 6) == EXPECTED, read.__name__
