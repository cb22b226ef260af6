"""A reply that can never be written goes to the dead-letter topic, on every sink.

Two layers, each against the real stores (DuckDB file, PostgreSQL at
127.0.0.1:5432, clickhouse-server, Parquet directory, the example JSON Lines
sink) and, for the runner, the real embedded broker:

* the runner decodes replies with their types and bounds: a record with a
  string where a number belongs, or a time no store can hold, is dead-lettered
  before any sink sees it, and the replies around it are stored;
* a sink handed such a reply anyway (built by hand, not decoded) refuses it
  with ``SinkWriteError(retriable=False)`` instead of an unconverted error that
  the runner would retry forever.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from clickhouse_driver import Client

from sms_replies.broker.admin import ensure_topics
from sms_replies.errors import SinkWriteError
from sms_replies.records import Reply
from sms_replies.settings import Settings
from sms_replies.sinks.base import Sink
from sms_replies.sinks.clickhouse import ClickHouseSink, ClickHouseSinkSettings
from sms_replies.sinks.duckdb import DuckDBSink
from sms_replies.sinks.parquet import ParquetSink, view_sql
from sms_replies.sinks.postgres import PostgresSink
from sms_replies.sinks.runner import Backoff, SinkRunner
from sms_replies.sinks.testing import make_reply
from tests.clickhouse_server import LocalServer
from tests.integration.conftest import consume
from tests.integration.test_sink_contract_clickhouse import clickhouse_server  # noqa: F401

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
SINKS = ["duckdb", "postgres", "clickhouse", "parquet", "jsonl"]

StoredIds = Callable[[], Awaitable[set[str]]]


@pytest.fixture
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Sink, StoredIds]]:
    """A sink of the parametrized kind on its real store, and a reader of its reply_ids."""
    kind: str = request.param
    name = f"never_writable_{uuid.uuid4().hex[:10]}"
    sink: Sink
    if kind == "duckdb":
        duck = DuckDBSink(tmp_path / "replies.duckdb")

        async def duck_ids() -> set[str]:
            with duckdb.connect(str(duck.path), read_only=True) as con:
                return {r[0] for r in con.execute("SELECT reply_id FROM replies").fetchall()}

        # The sink may hold its file for its whole life: read after it closed.
        sink, ids = duck, duck_ids
    elif kind == "postgres":
        sink = PostgresSink(DSN, schema=name)

        async def pg_ids() -> set[str]:
            con = await asyncpg.connect(DSN)
            try:
                return {r[0] for r in await con.fetch(f'SELECT reply_id FROM "{name}".replies')}
            finally:
                await con.close()

        ids = pg_ids
    elif kind == "clickhouse":
        server: LocalServer = request.getfixturevalue("clickhouse_server")
        sink = ClickHouseSink(
            ClickHouseSinkSettings(host=server.host, port=server.port, database=name)
        )

        async def ch_ids() -> set[str]:
            client = Client(server.host, port=server.port)
            try:
                rows = client.execute(f"SELECT reply_id FROM `{name}`.replies FINAL")
                return {r[0] for r in rows}
            finally:
                client.disconnect()

        ids = ch_ids
    elif kind == "parquet":
        parquet = ParquetSink(tmp_path / "parquet")

        async def parquet_ids() -> set[str]:
            with duckdb.connect() as con:
                con.execute(view_sql(parquet.directory))
                return {r[0] for r in con.execute("SELECT reply_id FROM replies").fetchall()}

        sink, ids = parquet, parquet_ids
    else:
        from sms_replies_jsonl.sink import JsonlSink

        jsonl = JsonlSink(tmp_path / "replies.jsonl")

        async def jsonl_ids() -> set[str]:
            lines = jsonl.path.read_text().splitlines()
            return {json.loads(line)["reply_id"] for line in lines if line}

        sink, ids = jsonl, jsonl_ids
    try:
        yield sink, ids
    finally:
        await sink.close()
        if kind == "postgres":
            con = await asyncpg.connect(DSN)
            try:
                await con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            finally:
                await con.close()
        elif kind == "clickhouse":
            server = request.getfixturevalue("clickhouse_server")
            client = Client(server.host, port=server.port)
            try:
                client.execute(f"DROP DATABASE IF EXISTS `{name}`")
            finally:
                client.disconnect()


def reply_record(reply: Reply, **wrong: Any) -> bytes:
    """The reply as its topic carries it, with some fields replaced by ``wrong`` values."""
    fields = orjson.loads(reply.encode())
    fields.update(wrong)
    return orjson.dumps(fields)


# A string where a number belongs (seen in review), a time past year 9999 (no
# store or datetime holds it), a count past 32 bits, a text where a list belongs.
WRONG_FIELDS: list[dict[str, Any]] = [
    {"received_at_ms": "x"},
    {"received_at_ms": 2**62},
    {"parts_expected": 2**40},
    {"provider_message_ids": "m-1"},
    {"is_stop": "no"},
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("store", SINKS, indirect=True)
async def test_runner_dead_letters_mistyped_replies_and_stores_the_rest(
    store: tuple[Sink, StoredIds], settings: Settings
) -> None:
    sink, stored_ids = store
    await ensure_topics(settings.bootstrap, settings.topics, partitions=1)
    good = [make_reply(n, prefix=f"ok-{sink.name}") for n in range(3)]
    bad = [
        reply_record(make_reply(10 + i, prefix=f"bad-{sink.name}"), **wrong)
        for i, wrong in enumerate(WRONG_FIELDS)
    ]
    values = [good[0].encode(), *bad[:3], good[1].encode(), *bad[3:], good[2].encode()]
    dead_letters = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await dead_letters.start()
    runner = SinkRunner(
        sink,
        bootstrap=settings.bootstrap,
        topics=settings.topics,
        group=f"{settings.topic_prefix}.sink.{sink.name}",
        batch_size=100,
        batch_timeout=0.2,
        dead_letters=dead_letters,
        backoff=Backoff(initial=0.05, maximum=0.5),
        fetch_max_wait_ms=50,
    )
    task = asyncio.create_task(runner.run())
    try:
        for value in values:
            await dead_letters.send_and_wait(settings.topics.replies, value, partition=0)
        letters = [
            orjson.loads(v)
            for v in await consume(
                settings.bootstrap, settings.topics.dead_letter, len(bad), timeout=60
            )
        ]
        async with asyncio.timeout(30):
            for _ in iter(lambda: runner.progress.written >= len(good), True):
                await asyncio.sleep(0.1)
    finally:
        runner.stop()
        await task
        await dead_letters.stop()
    await sink.close()  # DuckDB: release the file for the reader
    assert await stored_ids() == {reply.reply_id for reply in good}
    assert sorted(letter["record"] for letter in letters) == sorted(v.decode() for v in bad)
    assert all("not a Reply record" in letter["error"] for letter in letters)
    assert runner.progress.dead_lettered == len(bad)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("store", ["duckdb", "postgres", "clickhouse", "parquet"], indirect=True)
@pytest.mark.parametrize("wrong", WRONG_FIELDS[:3], ids=lambda w: repr(w))
async def test_sink_refuses_a_reply_it_can_never_write_for_good(
    store: tuple[Sink, StoredIds], wrong: dict[str, Any]
) -> None:
    sink, stored_ids = store
    await sink.setup()
    poison = dataclasses.replace(make_reply(1, prefix="poison"), **wrong)
    good = make_reply(2, prefix="good")
    with pytest.raises(SinkWriteError) as raised:
        await sink.write([good, poison])
    assert raised.value.retriable is False
    await sink.write([good])  # the rest of the batch can be written
    await sink.close()
    assert await stored_ids() == {good.reply_id}
