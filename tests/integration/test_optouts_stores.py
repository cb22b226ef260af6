"""The opt-out list kept by the real sinks in real stores, whatever the order of the batches.

One set of replies (STOP then START then "Oui" from one number, a STOP text from
another, a short-number stop, a START and a STOP in the same millisecond, a
pseudonymised sender, replies that decide nothing) is written through each
database sink in several batch orders, each replayed, and the ``optouts``
table must hold exactly the expected rows. Real servers: a DuckDB file,
PostgreSQL at 127.0.0.1:5432 (a schema of its own), Debian's clickhouse-server
18.16 (read with FINAL: its inserts are kept, the version picks the row).
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import duckdb
import pytest
from clickhouse_driver import Client

from sms_replies.analytics.optouts import list_optouts
from sms_replies.errors import SinkWriteError
from sms_replies.records import Reply
from sms_replies.sinks.base import Sink
from sms_replies.sinks.clickhouse import ClickHouseSink
from sms_replies.sinks.duckdb import DuckDBSink
from sms_replies.sinks.postgres import PostgresSink
from sms_replies.sinks.testing import BASE_MS, make_reply
from sms_replies.stores.clickhouse import ClickHouseSettings, optouts_sql
from sms_replies.stores.readers import open_store
from sms_replies.stores.url import StoreURL, parse_store_url
from tests.clickhouse_server import LocalServer, clickhouse_server_binary, local_clickhouse_server

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
MINUTE = 60_000

A, B, C, D, E, F = (f"+336000000{n:02d}" for n in range(1, 7))
PSEUDONYM = "h:" + "5e" * 32


def reply(n: int, sender: str, text: str, at_ms: int, **changes: object) -> Reply:
    keyword = text.split()[0].upper() if text.strip() else ""
    is_stop = keyword in {"STOP", "ARRET"}
    base = make_reply(n, prefix="optout", text=text, keyword=keyword)
    fields: dict[str, object] = {
        "sender": sender,
        "received_at_ms": BASE_MS + at_ms,
        "is_stop": is_stop,
        "stop_source": "text" if is_stop else None,
    }
    return dataclasses.replace(base, **{**fields, **changes})  # type: ignore[arg-type]


REPLIES = [
    reply(1, A, "STOP", 0),
    reply(2, A, "Start", 5 * MINUTE),
    reply(3, A, "Oui", 9 * MINUTE),  # answers a question: changes nothing
    reply(4, B, "Arret svp", 1 * MINUTE),
    reply(
        5,
        C,
        "merci",
        2 * MINUTE,
        channel="short_number",
        recipient=None,
        is_stop=True,
        stop_source="provider",
    ),
    reply(6, D, "START", 3 * MINUTE + 7),  # same millisecond as its STOP: the STOP wins
    reply(7, D, "STOP", 3 * MINUTE + 7),
    reply(8, E, "Oui", 4 * MINUTE),  # never decided anything: no row
    reply(9, PSEUDONYM, "STOP", 6 * MINUTE + 250),
    reply(10, PSEUDONYM, "bonjour", 8 * MINUTE),
]
BY_ID = {r.reply_id: r for r in REPLIES}


def expected() -> dict[str, tuple[str, str, str]]:
    """sender -> (status, reply_id, source), written out by hand from the list above."""
    return {
        A: ("opted_in", REPLIES[1].reply_id, "keyword"),
        B: ("opted_out", REPLIES[3].reply_id, "text"),
        C: ("opted_out", REPLIES[4].reply_id, "provider"),
        D: ("opted_out", REPLIES[6].reply_id, "text"),
        PSEUDONYM: ("opted_out", REPLIES[8].reply_id, "text"),
    }


def batch_orders() -> list[list[list[Reply]]]:
    """Batches in several orders: newest first, one by one reversed, shuffled, all at once."""
    shuffled = list(REPLIES)
    random.Random(14).shuffle(shuffled)
    return [
        [REPLIES[5:], REPLIES[:5]],
        [[r] for r in reversed(REPLIES)],
        [shuffled[:3], shuffled[3:7], shuffled[7:]],
        [REPLIES],
    ]


Rows = dict[str, tuple[str, str, str, datetime]]


def check(rows: Rows, *, whole_seconds: bool = False) -> None:
    assert {s: row[:3] for s, row in rows.items()} == expected()
    for sender, (_, reply_id, _, since) in rows.items():
        want = datetime.fromtimestamp(BY_ID[reply_id].received_at_ms / 1000, tz=UTC)
        if whole_seconds:  # ClickHouse 18.16: DateTime, whole seconds
            want = want.replace(microsecond=0)
        got = since if since.tzinfo else since.replace(tzinfo=UTC)
        assert got == want, sender


async def write_all(sink: Sink, batches: list[list[Reply]]) -> None:
    for batch in batches:
        await sink.write(batch)
    for batch in batches:  # the whole stream replayed (a crash before any commit)
        await sink.write(batch)


# -- DuckDB -----------------------------------------------------------------------------


@pytest.mark.parametrize("order", range(len(batch_orders())))
async def test_duckdb(tmp_path: Path, order: int) -> None:
    path = tmp_path / "replies.duckdb"
    async with DuckDBSink(path, serve=False) as sink:
        await write_all(sink, batch_orders()[order])
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("SELECT sender, status, reply_id, source, since FROM optouts").fetchall()
        (stored,) = con.execute("SELECT count(*) FROM replies").fetchone() or (0,)
    finally:
        con.close()
    assert stored == len(REPLIES)
    check({s: (st, r, src, at) for s, st, r, src, at in rows})


async def test_duckdb_a_later_batch_overrides_and_an_older_one_does_not(tmp_path: Path) -> None:
    """The upsert's WHERE really compares: without it the last write would win."""
    path = tmp_path / "replies.duckdb"
    async with DuckDBSink(path, serve=False) as sink:
        await sink.write([REPLIES[1]])  # A: START at 5 min
        await sink.write([REPLIES[0]])  # A: STOP at 0, older: ignored
        con = sink._connection()
        assert con.execute("SELECT status FROM optouts").fetchall() == [("opted_in",)]
        later_stop = reply(11, A, "STOP", 20 * MINUTE)
        await sink.write([later_stop])
        assert con.execute("SELECT status, reply_id FROM optouts").fetchall() == [
            ("opted_out", later_stop.reply_id)
        ]


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    name = f"stores_optouts_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        con = await asyncpg.connect(DSN)
        try:
            await con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await con.close()


@pytest.mark.parametrize("order", range(len(batch_orders())))
async def test_postgres(pg_schema: str, order: int) -> None:
    async with PostgresSink(DSN, schema=pg_schema) as sink:
        await write_all(sink, batch_orders()[order])
    con = await asyncpg.connect(DSN)
    try:
        rows = await con.fetch(
            f'SELECT sender, status, reply_id, source, since FROM "{pg_schema}".optouts'
        )
        stored = await con.fetchval(f'SELECT count(*) FROM "{pg_schema}".replies')
    finally:
        await con.close()
    assert stored == len(REPLIES)
    check({r["sender"]: (r["status"], r["reply_id"], r["source"], r["since"]) for r in rows})


async def test_postgres_a_bad_decision_rolls_back_the_replies_too(pg_schema: str) -> None:
    """Replies and decisions are one transaction: a rejected batch stores neither."""
    async with PostgresSink(DSN, schema=pg_schema) as sink:
        await sink.write([REPLIES[0]])
        con = await asyncpg.connect(DSN)
        try:
            await con.execute(
                f"ALTER TABLE \"{pg_schema}\".optouts ADD CONSTRAINT no_b CHECK (sender <> '{B}')"
            )
        finally:
            await con.close()
        with pytest.raises(SinkWriteError, match="no_b") as info:
            await sink.write([REPLIES[3], REPLIES[1]])
        assert not info.value.retriable  # the runner dead-letters it, never retries forever
    con = await asyncpg.connect(DSN)
    try:
        ids = {
            r["reply_id"] for r in await con.fetch(f'SELECT reply_id FROM "{pg_schema}".replies')
        }
    finally:
        await con.close()
    assert ids == {REPLIES[0].reply_id}


# -- ClickHouse 18.16 -------------------------------------------------------------------


@pytest.fixture(scope="module")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    if clickhouse_server_binary() is None:
        pytest.skip("clickhouse-server is not installed (apt-get install -y clickhouse-server)")
    with local_clickhouse_server(tmp_path_factory.mktemp("clickhouse")) as server:
        yield server


@pytest.mark.parametrize("order", range(len(batch_orders())))
async def test_clickhouse(clickhouse_server: LocalServer, order: int) -> None:
    database = f"stores_optouts_{uuid.uuid4().hex[:12]}"
    settings = ClickHouseSettings(
        host=clickhouse_server.host, port=clickhouse_server.port, database=database
    )
    client = Client(clickhouse_server.host, port=clickhouse_server.port)
    try:
        async with ClickHouseSink(settings) as sink:
            await write_all(sink, batch_orders()[order])
            whole_seconds = not (sink.features and sink.features.datetime64)
        sql = optouts_sql(database)
        rows = client.execute(sql)  # sender, status, since, reply_id, source
        check({s: (st, r, src, at) for s, st, at, r, src in rows}, whole_seconds=whole_seconds)
        final_rows = client.execute(f"SELECT count() FROM `{database}`.optouts FINAL")
        assert final_rows == [(len(expected()),)]
    finally:
        client.execute(f"DROP DATABASE IF EXISTS `{database}`")
        client.disconnect()


@pytest.mark.parametrize("sink_name", ["duckdb", "postgres", "clickhouse"])
async def test_the_setting_reaches_every_sink(
    sink_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SMS_REPLIES_RESUBSCRIBE_KEYWORDS as the sinks process reads it (from_settings)."""
    from sms_replies.settings import Settings
    from sms_replies.sinks.registry import load_sink

    monkeypatch.setenv("SMS_REPLIES_RESUBSCRIBE_KEYWORDS", "Oui, START")
    monkeypatch.setenv("SMS_REPLIES_POSTGRES_DSN", DSN)
    settings = Settings.load(data_dir=tmp_path)
    sink = load_sink(sink_name).from_settings(settings)
    assert getattr(sink, "resubscribe", None) == {"OUI", "START"}


# -- The list's order, the same in every store ------------------------------------------

# Two STOPs in one second (.123 and .823): the later one's sender sorts first by name,
# so a store that orders whole seconds by sender lists them the other way round.
EARLY, LATE, NEXT = "+33600000090", "+33600000091", "+33600000092"
SAME_SECOND = [
    reply(21, EARLY, "STOP", 0),
    reply(22, LATE, "STOP", 700),
    reply(23, NEXT, "STOP", 1_000),
]
LISTED_ORDER = [NEXT, LATE, EARLY]


def listed(url: StoreURL) -> list[str]:
    with open_store(url) as reader:
        return [o.sender for o in list_optouts(reader, tz="UTC").optouts]


async def test_list_order_duckdb(tmp_path: Path) -> None:
    async with DuckDBSink(tmp_path / "order.duckdb", serve=False) as sink:
        await sink.write(SAME_SECOND[::-1])
    assert listed(StoreURL("duckdb", path=tmp_path / "order.duckdb")) == LISTED_ORDER


async def test_list_order_postgres(pg_schema: str) -> None:
    async with PostgresSink(DSN, schema=pg_schema) as sink:
        await sink.write(SAME_SECOND[::-1])
    url = parse_store_url(f"{DSN}?schema={pg_schema}", default_duckdb=Path("unused"))
    assert listed(url) == LISTED_ORDER


async def test_list_order_clickhouse(clickhouse_server: LocalServer) -> None:
    """18.16 keeps whole seconds: the order comes from the version column's milliseconds."""
    database = f"stores_optouts_order_{uuid.uuid4().hex[:12]}"
    settings = ClickHouseSettings(
        host=clickhouse_server.host, port=clickhouse_server.port, database=database
    )
    client = Client(clickhouse_server.host, port=clickhouse_server.port)
    try:
        async with ClickHouseSink(settings) as sink:
            await sink.write(SAME_SECOND[::-1])
        url = parse_store_url(
            f"clickhouse://{clickhouse_server.host}:{clickhouse_server.port}/{database}",
            default_duckdb=Path("unused"),
        )
        assert listed(url) == LISTED_ORDER
    finally:
        client.execute(f"DROP DATABASE IF EXISTS `{database}`")
        client.disconnect()
