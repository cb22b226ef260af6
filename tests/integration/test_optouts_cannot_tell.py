"""A store that cannot tell who opted out never reads as "nobody opted out".

``sms-replies optouts list|check`` (exit 1 and a warning naming the store, like
``stats``) and ``GET /api/optouts`` (503 and a JSON error) on: a PostgreSQL
schema with no tables (the wrong store), a DuckDB path with no file, and stores
whose replies were written before the opt-out list existed (no ``optouts``
table). Real PostgreSQL at 127.0.0.1:5432 (schemas of their own), real DuckDB
files written by the real sinks.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import duckdb
import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from sms_replies.analytics.api import create_api_app
from sms_replies.analytics.cli import optouts_group
from sms_replies.sinks.duckdb import DuckDBSink
from sms_replies.sinks.postgres import PostgresSink
from sms_replies.stores.url import parse_store_url
from tests.analytics_sample import SAMPLE_REPLIES

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
COMMANDS = [["list"], ["list", "--format", "json"], ["check", "--phone", "0612345678"]]


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    name = f"optfix_cannot_tell_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        con = await asyncpg.connect(DSN)
        try:
            await con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await con.close()


async def pg(sql: str) -> None:
    con = await asyncpg.connect(DSN)
    try:
        await con.execute(sql)
    finally:
        await con.close()


def refused(args: list[str]) -> str:
    result = CliRunner().invoke(optouts_group, args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    return result.stderr


async def api_error(store: str) -> dict[str, str]:
    app = create_api_app(parse_store_url(store, default_duckdb=Path("unused.duckdb")))
    async with TestClient(TestServer(app)) as c:
        r = await c.get("/api/optouts")
        assert r.status == 503, await r.text()
        body: dict[str, str] = await r.json()
    assert set(body) == {"error", "message"}
    return body


async def written_before_the_list(store: str) -> None:
    """The sample (STOPs included) stored, then the optouts table of today's sinks dropped."""
    url = parse_store_url(store, default_duckdb=Path("unused.duckdb"))
    if url.backend == "duckdb":
        assert url.path is not None
        async with DuckDBSink(url.path, serve=False) as sink:
            await sink.write(SAMPLE_REPLIES)
        con = duckdb.connect(str(url.path))
        try:
            con.execute("DROP TABLE optouts")
        finally:
            con.close()
    else:
        async with PostgresSink(DSN, schema=url.schema) as sink:
            await sink.write(SAMPLE_REPLIES)
        await pg(f'DROP TABLE "{url.schema}".optouts')


@pytest.mark.parametrize("command", COMMANDS)
async def test_cli_on_a_postgres_schema_without_tables(pg_schema: str, command: list[str]) -> None:
    await pg(f'CREATE SCHEMA "{pg_schema}"')
    store = f"{DSN}?schema={pg_schema}"
    warning = refused([*command, "--store", store])
    assert f"the store {store} holds no replies table" in warning
    # The finding: schema public of db test, no table there either.
    assert "holds no replies table" in refused([*command, "--store", DSN])


@pytest.mark.parametrize("command", COMMANDS)
async def test_cli_on_a_postgres_store_written_before_the_list(
    pg_schema: str, command: list[str]
) -> None:
    store = f"{DSN}?schema={pg_schema}"
    await written_before_the_list(store)
    warning = refused([*command, "--store", store])
    assert f"the store {store} keeps no opt-out list yet" in warning
    assert "cannot tell who opted out" in warning


async def test_cli_on_a_postgres_store_with_its_list_answers(pg_schema: str) -> None:
    """The same store with the table a sink keeps: an answer, exit 0 (the test can fail)."""
    store = f"{DSN}?schema={pg_schema}"
    async with PostgresSink(DSN, schema=pg_schema) as sink:
        await sink.write(SAMPLE_REPLIES)
    result = CliRunner().invoke(optouts_group, ["check", "--phone", "0612345678", "--store", store])
    assert result.exit_code == 0, result.output
    assert "not on the opt-out list" in result.stdout


async def test_api_on_a_store_that_does_not_exist(tmp_path: Path, pg_schema: str) -> None:
    path = tmp_path / "elsewhere.duckdb"
    assert (await api_error(str(path)))["error"] == "store_missing"
    assert not path.exists()
    await pg(f'CREATE SCHEMA "{pg_schema}"')
    body = await api_error(f"{DSN}?schema={pg_schema}")
    assert body == {"error": "store_missing", "message": "the store holds no replies table"}


async def test_api_on_stores_written_before_the_list(tmp_path: Path, pg_schema: str) -> None:
    for store in (str(tmp_path / "old.duckdb"), f"{DSN}?schema={pg_schema}"):
        await written_before_the_list(store)
        body = await api_error(store)
        assert body["error"] == "optout_list_missing", store
        assert "cannot tell who opted out" in body["message"]


async def test_openapi_documents_the_503(tmp_path: Path) -> None:
    app = create_api_app(tmp_path / "replies.duckdb")
    async with TestClient(TestServer(app)) as c:
        doc = await (await c.get("/api/openapi.json")).json()
    op = doc["paths"]["/api/optouts"]["get"]
    for error in ("store_missing", "optout_list_missing"):
        assert error in op["description"]
        assert error in op["responses"]["503"]["description"]
