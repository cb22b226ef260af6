"""Retention and erasure and the opt-out list, on real DuckDB, PostgreSQL and ClickHouse 18.16.

The rule (docs/analytics.md, privacy): ``opted_out`` rows are the stop-list and stay
through ``erase`` and ``retention``; ``opted_in`` rows go with the replies that
decided them; ``erase --forget-opt-out`` removes the number's row too. On
ClickHouse every version of a sender's row goes, so that an erased ``opted_in``
does not read ``opted_out`` again from an older version (not provable here:
18.16 runs mutations through merges, which collapse the versions first).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import duckdb
import pytest
from clickhouse_driver import Client

from sms_replies.records import Reply
from sms_replies.sinks.clickhouse import ClickHouseSink
from sms_replies.sinks.duckdb import DuckDBSink
from sms_replies.sinks.postgres import PostgresSink
from sms_replies.sinks.testing import make_reply
from sms_replies.stores.clickhouse import ClickHouseSettings, optouts_sql
from sms_replies.stores.manage import Stores, apply_retention, erase_sender, kept_optouts
from tests.clickhouse_server import LocalServer, clickhouse_server_binary, local_clickhouse_server

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
DAY = 86_400_000
T0 = int(datetime(2025, 3, 1, 9, tzinfo=UTC).timestamp() * 1000)
X, Y, Z = "+33600000011", "+33600000012", "+33600000013"


def reply(n: int, sender: str, word: str, day: int) -> Reply:
    stop = word == "STOP"
    return dataclasses.replace(
        make_reply(n, prefix="erase"),
        sender=sender,
        text=word.title(),
        keyword=word,
        is_stop=stop,
        stop_source="text" if stop else None,
        received_at_ms=T0 + day * DAY,
    )


REPLIES = [
    reply(1, X, "STOP", 0),  # X: opted out, long ago
    reply(2, Y, "STOP", 0),
    reply(3, Y, "START", 1),  # Y: opted back in on day 1
    reply(4, Z, "STOP", 0),
    reply(5, Z, "START", 1),
    reply(6, Z, "STOP", 5),  # Z: opted out again on day 5
]
NOW = datetime.fromtimestamp((T0 + 6 * DAY) / 1000, tz=UTC)  # retention --days 3: before day 3

Status = dict[str, str]
Reader = Callable[[], Awaitable[Status]]


@dataclasses.dataclass
class Store:
    name: str
    stores: Stores
    optouts: Reader


@pytest.fixture(scope="module")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    if clickhouse_server_binary() is None:
        pytest.skip("clickhouse-server is not installed (apt-get install -y clickhouse-server)")
    with local_clickhouse_server(tmp_path_factory.mktemp("clickhouse")) as server:
        yield server


async def duckdb_store(tmp_path: Path) -> Store:
    path = tmp_path / "replies.duckdb"
    async with DuckDBSink(path, serve=False) as sink:
        await sink.write(REPLIES)

    async def optouts() -> Status:
        con = duckdb.connect(str(path), read_only=True)
        try:
            return dict(con.execute("SELECT sender, status FROM optouts").fetchall())
        finally:
            con.close()

    return Store("duckdb", Stores(duckdb_path=path), optouts)


async def postgres_store(schema: str) -> Store:
    async with PostgresSink(DSN, schema=schema) as sink:
        await sink.write(REPLIES)

    async def optouts() -> Status:
        con = await asyncpg.connect(DSN)
        try:
            rows = await con.fetch(f'SELECT sender, status FROM "{schema}".optouts')
        finally:
            await con.close()
        return {r["sender"]: r["status"] for r in rows}

    return Store("postgres", Stores(postgres_dsn=DSN, postgres_schema=schema), optouts)


async def clickhouse_store(
    server: LocalServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> Store:
    monkeypatch.setenv("SMS_REPLIES_CLICKHOUSE_HOST", server.host)
    monkeypatch.setenv("SMS_REPLIES_CLICKHOUSE_PORT", str(server.port))
    monkeypatch.setenv("SMS_REPLIES_CLICKHOUSE_DATABASE", database)
    settings = ClickHouseSettings(host=server.host, port=server.port, database=database)
    async with ClickHouseSink(settings) as sink:
        for one in REPLIES:  # one insert each: a sender's decisions in several versions
            await sink.write([one])

    async def optouts() -> Status:
        client = Client(server.host, port=server.port)
        try:
            return {s: st for s, st, *_ in client.execute(optouts_sql(database))}
        finally:
            client.disconnect()

    return Store("clickhouse", Stores(clickhouse=True), optouts)


@pytest.fixture(params=["duckdb", "postgres", "clickhouse"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Store]:
    name = f"optouts_erase_{uuid.uuid4().hex[:12]}"
    if request.param == "duckdb":
        yield await duckdb_store(tmp_path)
    elif request.param == "postgres":
        try:
            yield await postgres_store(name)
        finally:
            con = await asyncpg.connect(DSN)
            try:
                await con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            finally:
                await con.close()
    else:
        server: LocalServer = request.getfixturevalue("clickhouse_server")
        try:
            yield await clickhouse_store(server, name, monkeypatch)
        finally:
            client = Client(server.host, port=server.port)
            client.execute(f"DROP DATABASE IF EXISTS `{name}`")
            client.disconnect()


async def test_the_list_before_anything_is_deleted(store: Store) -> None:
    assert await store.optouts() == {X: "opted_out", Y: "opted_in", Z: "opted_out"}


async def test_erase_keeps_an_opt_out(store: Store) -> None:
    assert await erase_sender(store.stores, X) == {store.name: 1}
    assert await store.optouts() == {X: "opted_out", Y: "opted_in", Z: "opted_out"}
    assert await kept_optouts(store.stores, X) == [store.name]


async def test_erase_deletes_an_opt_in_whole(store: Store) -> None:
    """Every version: an older STOP must not come back as the number's status."""
    assert await erase_sender(store.stores, Y) == {store.name: 2}
    assert await store.optouts() == {X: "opted_out", Z: "opted_out"}
    assert await kept_optouts(store.stores, Y) == []


async def test_erase_forget_opt_out_deletes_it(store: Store) -> None:
    assert await erase_sender(store.stores, Z, dry_run=True, forget_optouts=True) == {store.name: 3}
    assert Z in await store.optouts()  # a dry run deletes nothing
    assert await erase_sender(store.stores, Z, forget_optouts=True) == {store.name: 3}
    assert await store.optouts() == {X: "opted_out", Y: "opted_in"}


async def test_retention_deletes_opt_ins_decided_before_the_cutoff(store: Store) -> None:
    # Before day 3: every reply but Z's last STOP (5 of 6).
    assert await apply_retention(store.stores, 3, now=NOW) == {store.name: 5}
    assert await store.optouts() == {X: "opted_out", Z: "opted_out"}
