"""PostgreSQL: the replies table gets its sender index, on creation and on a table of an
older release (``CREATE INDEX IF NOT EXISTS`` in ``ensure_tables``), and the search by
sender uses it (docs/analytics.md, "Scale")."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from sms_replies.stores.ddl import POSTGRES_INDEXES
from sms_replies.stores.postgres import ensure_tables

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
INDEX = POSTGRES_INDEXES["replies"][0][0]


@pytest.fixture
async def con() -> AsyncIterator[asyncpg.Connection]:
    schema = f"scale_index_test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
        await connection.execute(f'SET search_path = "{schema}"')
        yield connection
    finally:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()


async def _indexes(con: asyncpg.Connection) -> set[str]:
    rows = await con.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = 'replies'"
    )
    return {row["indexname"] for row in rows}


async def test_new_table_has_the_sender_index(con: asyncpg.Connection) -> None:
    schema = await con.fetchval("SELECT current_schema()")
    await ensure_tables(con, schema)
    assert INDEX in await _indexes(con)


async def test_table_of_an_older_release_gets_it(con: asyncpg.Connection) -> None:
    schema = await con.fetchval("SELECT current_schema()")
    await ensure_tables(con, schema)
    await con.execute(f"DROP INDEX {INDEX}")  # as an older release created it
    await con.execute(
        "INSERT INTO replies (reply_id, channel, sender, text, keyword, is_stop, "
        "parts_expected, parts_received, complete, received_at, ingested_at, "
        "provider_message_ids) SELECT 'r' || i, 'long_number', '+3361234' || (i % 100), "
        "'oui', 'OUI', false, 1, 1, true, now() - i * interval '1 minute', now(), "
        "ARRAY['m' || i] FROM generate_series(1, 5000) AS i"
    )
    assert INDEX not in await _indexes(con)
    await ensure_tables(con, schema)
    assert INDEX in await _indexes(con)
    await con.execute("ANALYZE replies")
    plan = "\n".join(
        row[0]
        for row in await con.fetch(
            "EXPLAIN SELECT * FROM replies r WHERE r.sender = $1 "
            "ORDER BY r.received_at DESC LIMIT 101",
            "+336123417",
        )
    )
    assert INDEX in plan
