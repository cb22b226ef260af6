"""A table made by the DDL of an older version gets the new columns when a sink starts.

The old table is created with each store's DDL (``sms_replies.stores.ddl``) over
the column list of that version (the ``replies`` columns up to ``late``), holds
a row written then, and is set up again by today's sink: the old row keeps its
values and reads null in the new columns, a new reply is stored with every
column, and the tables that version did not have (``campaigns``, ``optouts``)
are created. Real
servers: DuckDB file, PostgreSQL at 127.0.0.1:5432, Debian's clickhouse-server.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import pytest
from clickhouse_driver import Client

from sms_replies.schema import COLUMNS, to_row
from sms_replies.sinks import clickhouse as clickhouse_sink
from sms_replies.sinks import duckdb as duckdb_sink
from sms_replies.sinks import postgres as postgres_sink
from sms_replies.sinks.testing import PROVIDER_SENT_MS, make_reply
from sms_replies.stores.ddl import REPLIES, clickhouse_create, duckdb_create, postgres_create
from tests.clickhouse_server import LocalServer, clickhouse_server_binary, local_clickhouse_server

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
# The replies table as the versions before provider_sent_at, campaign and tag made it.
OLD_COLUMN_NAMES = (
    "reply_id",
    "channel",
    "sender",
    "recipient",
    "text",
    "keyword",
    "is_stop",
    "stop_source",
    "parts_expected",
    "parts_received",
    "complete",
    "received_at",
    "ingested_at",
    "provider_message_ids",
    "last_part_at",
    "late",
)
OLD_COLUMNS = tuple(c for c in COLUMNS if c.name in OLD_COLUMN_NAMES)
OLD_REPLIES = dataclasses.replace(REPLIES, columns=OLD_COLUMNS)
NEW_COLUMN_NAMES = tuple(c.name for c in COLUMNS if c.name not in OLD_COLUMN_NAMES)

OLD_REPLY = make_reply(1, prefix="old")
NEW_REPLY = make_reply(
    2, prefix="new", provider_sent_at_ms=PROVIDER_SENT_MS, campaign="spring-A", tag="t"
)


def old_row() -> tuple[Any, ...]:
    row = dict(zip((c.name for c in COLUMNS), to_row(OLD_REPLY, datetime.now(UTC)), strict=True))
    return tuple(row[name] for name in OLD_COLUMN_NAMES)


def test_the_old_table_really_lacks_the_new_columns() -> None:
    assert len(OLD_COLUMNS) == len(OLD_COLUMN_NAMES)
    assert {"provider_sent_at", "campaign", "tag"} <= set(NEW_COLUMN_NAMES)


def check_rows(rows: dict[str, dict[str, Any]]) -> None:
    assert sorted(rows) == [NEW_REPLY.reply_id, OLD_REPLY.reply_id]
    old, new = rows[OLD_REPLY.reply_id], rows[NEW_REPLY.reply_id]
    assert old["text"] == OLD_REPLY.text
    for name in NEW_COLUMN_NAMES:
        assert old[name] is None, f"{name} of a row stored before the column existed"
    assert (new["campaign"], new["tag"]) == ("spring-A", "t")
    sent = new["provider_sent_at"]
    sent = sent if sent.tzinfo else sent.replace(tzinfo=UTC)
    assert sent == datetime.fromtimestamp(PROVIDER_SENT_MS / 1000, tz=UTC)


async def test_duckdb(tmp_path: Path) -> None:
    path = tmp_path / "replies.duckdb"
    old_ddl = duckdb_create(OLD_REPLIES)
    con = duckdb.connect(str(path))
    con.execute(old_ddl)
    con.execute(
        f"INSERT INTO replies ({', '.join(OLD_COLUMN_NAMES)}) "
        f"VALUES ({', '.join('?' for _ in OLD_COLUMN_NAMES)})",
        list(old_row()),
    )
    con.close()
    async with duckdb_sink.DuckDBSink(path, serve=False) as sink:
        await sink.write([NEW_REPLY])
    con = duckdb.connect(str(path), read_only=True)
    try:
        cursor = con.execute("SELECT * FROM replies")
        names = [d[0] for d in cursor.description]
        rows = {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}
        tables = {
            name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
    finally:
        con.close()
    assert tables == {"replies", "campaigns", "optouts"}
    assert set(names) == {c.name for c in COLUMNS}
    check_rows(rows)


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    name = f"migration_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        con = await asyncpg.connect(DSN)
        try:
            await con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await con.close()


async def test_postgres(pg_schema: str) -> None:
    old_ddl = postgres_create(OLD_REPLIES, pg_schema)
    con = await asyncpg.connect(DSN)
    try:
        await con.execute(f'CREATE SCHEMA "{pg_schema}"')
        await con.execute(old_ddl)
        placeholders = ", ".join(f"${i}" for i in range(1, len(OLD_COLUMN_NAMES) + 1))
        await con.execute(
            f'INSERT INTO "{pg_schema}".replies ({", ".join(OLD_COLUMN_NAMES)}) '
            f"VALUES ({placeholders})",
            *old_row(),
        )
    finally:
        await con.close()
    async with postgres_sink.PostgresSink(DSN, schema=pg_schema) as sink:
        await sink.write([NEW_REPLY])
    con = await asyncpg.connect(DSN)
    try:
        fetched = await con.fetch(f'SELECT * FROM "{pg_schema}".replies')
        types = {
            r["column_name"]: r["data_type"]
            for r in await con.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = $1 AND table_name = 'replies'",
                pg_schema,
            )
        }
        tables = {
            r["table_name"]
            for r in await con.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                pg_schema,
            )
        }
    finally:
        await con.close()
    assert tables == {"replies", "campaigns", "optouts"}
    assert set(types) == {c.name for c in COLUMNS}
    assert types["provider_sent_at"] == "timestamp with time zone"
    check_rows({row["reply_id"]: dict(row) for row in fetched})


@pytest.fixture(scope="module")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    if clickhouse_server_binary() is None:
        pytest.skip("clickhouse-server is not installed (apt-get install -y clickhouse-server)")
    with local_clickhouse_server(tmp_path_factory.mktemp("clickhouse")) as server:
        yield server


async def test_clickhouse(clickhouse_server: LocalServer) -> None:
    database = f"migration_test_{uuid.uuid4().hex[:12]}"
    client = Client(clickhouse_server.host, port=clickhouse_server.port)
    try:
        features = clickhouse_sink.Features.detect(client)
        old_ddl = clickhouse_create(OLD_REPLIES, database, features)
        client.execute(f"CREATE DATABASE `{database}`")
        client.execute(old_ddl)
        client.execute(
            f"INSERT INTO `{database}`.replies ({', '.join(OLD_COLUMN_NAMES)}) VALUES",
            [old_row()],
        )
        settings = clickhouse_sink.ClickHouseSinkSettings(
            host=clickhouse_server.host, port=clickhouse_server.port, database=database
        )
        async with clickhouse_sink.ClickHouseSink(settings) as sink:
            await sink.write([NEW_REPLY])
        rows, columns = client.execute(clickhouse_sink.read_sql(database), with_column_types=True)
        types = dict(
            client.execute(
                f"SELECT name, type FROM system.columns "
                f"WHERE database = '{database}' AND table = 'replies'"
            )
        )
        names = [c[0] for c in columns]
        tables = {
            name
            for (name,) in client.execute(
                f"SELECT name FROM system.tables WHERE database = '{database}'"
            )
        }
        assert tables == {"replies", "campaigns", "optouts"}
        assert set(types) == {c.name for c in COLUMNS}
        assert types["provider_sent_at"].startswith("Nullable(DateTime")
        check_rows({row[0]: dict(zip(names, row, strict=True)) for row in rows})
    finally:
        client.execute(f"DROP DATABASE IF EXISTS `{database}`")
        client.disconnect()
