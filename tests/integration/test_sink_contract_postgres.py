"""The PostgreSQL sink against the sink kit, on the real server at 127.0.0.1:5432."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from sms_replies.errors import SinkWriteError
from sms_replies.records import Reply
from sms_replies.schema import COLUMNS
from sms_replies.sinks.postgres import APPLICATION_NAME, PostgresSink, ddl
from sms_replies.sinks.testing import ReadBack, SinkConformance, make_replies, make_reply

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A schema of its own for each test, dropped afterwards."""
    name = f"sink_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        con = await asyncpg.connect(DSN)
        try:
            await con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await con.close()


async def fetch_rows(schema: str) -> list[dict[str, Any]]:
    con = await asyncpg.connect(DSN)
    try:
        return [dict(row) for row in await con.fetch(f'SELECT * FROM "{schema}".replies')]
    finally:
        await con.close()


class TestPostgresSinkContract(SinkConformance):
    @pytest.fixture
    def sink(self, schema: str) -> PostgresSink:
        return PostgresSink(DSN, schema=schema)

    @pytest.fixture
    def read_back(self, schema: str) -> ReadBack:
        async def rows() -> list[dict[str, Any]]:
            return await fetch_rows(schema)

        return rows

    @pytest.fixture
    def broken_sink(self) -> Iterator[PostgresSink]:
        # A port that accepts TCP and never answers: the connect must time out.
        with socket.socket() as black_hole:
            black_hole.bind(("127.0.0.1", 0))
            black_hole.listen(8)
            port = black_hole.getsockname()[1]
            yield PostgresSink(f"postgresql://postgres@127.0.0.1:{port}/test", timeout=0.5)

    @pytest.fixture
    def rejected_reply(self) -> Reply:
        return make_reply(999, text="nul \x00 byte")  # PostgreSQL text cannot hold NUL


async def test_refused_connection_is_retriable(schema: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the sink connects
    sink = PostgresSink(f"postgresql://postgres@127.0.0.1:{port}/test", schema=schema)
    with pytest.raises(SinkWriteError) as info:
        await sink.write(make_replies(1))
    assert info.value.retriable
    await sink.close()


async def test_connections_killed_mid_life_then_retry_stores_everything(schema: str) -> None:
    batch = make_replies(20)
    async with PostgresSink(DSN, schema=schema) as sink:
        await sink.write(batch[:10])
        admin = await asyncpg.connect(DSN)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND pid <> pg_backend_pid()",
                APPLICATION_NAME,
            )
        finally:
            await admin.close()
        assert killed >= 1
        errors: list[SinkWriteError] = []
        for _attempt in range(3):  # what the runner does
            try:
                await sink.write(batch)
                break
            except SinkWriteError as exc:
                errors.append(exc)
        else:
            pytest.fail(f"write never succeeded after the connections came back: {errors}")
        assert all(error.retriable for error in errors)
    rows = await fetch_rows(schema)
    assert sorted(r["reply_id"] for r in rows) == sorted(r.reply_id for r in batch)


async def test_setup_adds_columns_missing_from_an_old_table(schema: str) -> None:
    con = await asyncpg.connect(DSN)
    try:
        await con.execute(f'CREATE SCHEMA "{schema}"')
        await con.execute(
            f'CREATE TABLE "{schema}".replies (reply_id text PRIMARY KEY, channel text NOT NULL)'
        )
        await con.execute(f"INSERT INTO \"{schema}\".replies VALUES ('old', 'long_number')")
    finally:
        await con.close()
    async with PostgresSink(DSN, schema=schema) as sink:
        await sink.write(make_replies(2))
    con = await asyncpg.connect(DSN)
    try:
        columns = await con.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = 'replies'",
            schema,
        )
    finally:
        await con.close()
    assert {c["column_name"] for c in columns} == {c.name for c in COLUMNS}
    rows = await fetch_rows(schema)
    assert sorted(r["reply_id"] for r in rows) == ["old", "r-000000000", "r-000000001"]


def test_ddl_maps_every_column() -> None:
    text = ddl("s")
    assert "reply_id text PRIMARY KEY NOT NULL" in text
    assert "received_at timestamptz NOT NULL" in text
    assert "provider_message_ids text[] NOT NULL" in text
    assert "recipient text," in text  # nullable
