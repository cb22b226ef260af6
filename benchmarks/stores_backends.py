"""Each store of the scale benchmark: a bulk load through its native path, then its queries.

Tables come from the product (``ensure_tables`` of :mod:`sms_replies.stores`:
the DDL of :mod:`sms_replies.stores.ddl`, indexes and sort keys included):

- DuckDB: ``INSERT INTO replies SELECT ... FROM <Arrow chunk>``, then ``CHECKPOINT``.
- PostgreSQL: a schema of its own, ``COPY ... (FORMAT csv)`` through asyncpg's
  ``copy_to_table``, each chunk written as CSV by DuckDB first (building Python
  tuples for ``copy_records_to_table`` cost more than the COPY itself), then
  ``VACUUM ANALYZE`` (what autovacuum does soon after a load).
- ClickHouse: a database of its own, ``INSERT`` batches of :data:`CH_BATCH` rows
  through clickhouse-driver (columnar), then ``OPTIMIZE ... FINAL`` (background
  merges would get there later).

The questions timed are the product's (:mod:`benchmarks.stores_queries`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_driver import Client
from tests.clickhouse_server import clickhouse_server_binary, local_clickhouse_server

from benchmarks.stores_synth import Campaign, Generator, campaigns
from sms_replies.schema import CAMPAIGN_COLUMNS, CAMPAIGNS_TABLE, COLUMN_NAMES, COLUMNS, TABLE
from sms_replies.stores import clickhouse as ch_store
from sms_replies.stores import duckdb as duck_store
from sms_replies.stores import postgres as pg_store
from sms_replies.stores.ddl import Features
from sms_replies.stores.url import StoreURL, parse_store_url

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_SCHEMA = "scale_bench"  # + the process id
CH_DATABASE = "scale_bench"
CH_BATCH = 500_000

Query = Callable[[], object]


class Unavailable(Exception):
    """The store cannot be reached here (reported as skipped)."""


class Backend(Protocol):
    name: str

    def version(self) -> str: ...
    def load(self, generator: Generator) -> None: ...
    def size_bytes(self) -> int | None: ...
    def server_rss_bytes(self) -> int | None: ...
    def url(self) -> StoreURL: ...


def _campaign_row(c: Campaign) -> tuple[Any, ...]:
    """In :data:`CAMPAIGN_COLUMNS` order; declared at its start."""
    return (c.name, c.channel, c.recipient, c.start, c.end, c.delivered, c.start)


_CAMPAIGN_NAMES = [c.name for c in CAMPAIGN_COLUMNS]


# -- DuckDB -------------------------------------------------------------------------


class DuckDBBackend:
    name = "duckdb"

    def __init__(self, root: Path) -> None:
        self.path = root / "scale.duckdb"

    def version(self) -> str:
        return f"duckdb {duckdb.__version__}"

    def load(self, generator: Generator) -> None:
        con = duckdb.connect(str(self.path))
        try:
            duck_store.ensure_tables(con)
            for chunk in generator.chunks():
                con.register("chunk", chunk)
                con.execute(
                    f"INSERT INTO {TABLE} ({', '.join(COLUMN_NAMES)}) "
                    f"SELECT {', '.join(COLUMN_NAMES)} FROM chunk"
                )
                con.unregister("chunk")
            for c in campaigns(generator.rows):
                con.execute(
                    f"INSERT INTO {CAMPAIGNS_TABLE} ({', '.join(_CAMPAIGN_NAMES)}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    list(_campaign_row(c)),
                )
            con.execute("CHECKPOINT")
        finally:
            con.close()

    def size_bytes(self) -> int | None:
        return self.path.stat().st_size

    def url(self) -> StoreURL:
        return StoreURL("duckdb", path=self.path)

    def server_rss_bytes(self) -> int | None:
        return None


# -- PostgreSQL ---------------------------------------------------------------------


def _write_pg_csv(chunk: pa.Table, path: Path) -> None:
    """``chunk`` as PostgreSQL's CSV: arrays as ``{a,b}`` literals (hex ids need no quoting)."""
    select = ", ".join(
        f"'{{' || array_to_string({c.name}, ',') || '}}'" if c.type == "text[]" else c.name
        for c in COLUMNS
    )
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("chunk", chunk)
        con.execute(f"COPY (SELECT {select} FROM chunk) TO '{path}' (HEADER false)")
    finally:
        con.close()


class PostgresBackend:
    name = "postgresql"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dsn = os.environ.get("SMS_REPLIES_BENCH_POSTGRES_DSN", DEFAULT_PG_DSN)
        self.schema = f"{PG_SCHEMA}_{os.getpid()}"  # concurrent runs share the server
        try:
            self._version = asyncio.run(self._fetch("SHOW server_version"))
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise Unavailable(f"unreachable: {exc}") from None

    async def _fetch(self, sql: str) -> Any:
        con = await asyncpg.connect(self.dsn, timeout=5)
        try:
            return await con.fetchval(sql)
        finally:
            await con.close()

    def version(self) -> str:
        return f"postgresql {str(self._version).split()[0]}"

    def load(self, generator: Generator) -> None:
        asyncio.run(self._load(generator))

    async def _load(self, generator: Generator) -> None:
        con = await asyncpg.connect(self.dsn)
        try:
            await con.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            await pg_store.ensure_tables(con, self.schema)
            csv = self.root / "chunk.csv"
            for chunk in generator.chunks():
                _write_pg_csv(chunk, csv)
                await con.copy_to_table(
                    TABLE,
                    source=csv,
                    columns=list(COLUMN_NAMES),
                    schema_name=self.schema,
                    format="csv",
                )
            csv.unlink(missing_ok=True)
            await con.copy_records_to_table(
                CAMPAIGNS_TABLE,
                records=[_campaign_row(c) for c in campaigns(generator.rows)],
                columns=_CAMPAIGN_NAMES,
                schema_name=self.schema,
            )
            await con.execute(f'VACUUM ANALYZE "{self.schema}".{TABLE}')
            await con.execute(f'VACUUM ANALYZE "{self.schema}".{CAMPAIGNS_TABLE}')
        finally:
            await con.close()

    def size_bytes(self) -> int | None:
        return int(
            asyncio.run(self._fetch(f"SELECT pg_total_relation_size('\"{self.schema}\".{TABLE}')"))
        )

    def server_rss_bytes(self) -> int | None:
        return None  # the machine's shared server: its memory is not this run's

    def url(self) -> StoreURL:
        return parse_store_url(
            f"{self.dsn}?schema={self.schema}", default_duckdb=Path("unused.duckdb")
        )

    def drop(self) -> None:
        asyncio.run(self._fetch(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))


# -- ClickHouse ---------------------------------------------------------------------


def _ch_columns(chunk: pa.Table, features: Features) -> list[list[Any]]:
    """Columnar lists as clickhouse-driver takes them (epoch seconds for ``DateTime``)."""
    out: list[list[Any]] = []
    for column, array in zip(COLUMNS, chunk.columns, strict=True):
        if column.type == "timestamp" and not features.datetime64:
            seconds = pc.divide(array.cast(pa.int64()), 1_000_000)
            out.append(seconds.to_pylist())
        elif column.type == "boolean":
            out.append(array.cast(pa.uint8()).to_pylist())
        else:
            out.append(array.to_pylist())
    return out


class ClickHouseBackend:
    name = "clickhouse"

    def __init__(self, root: Path, stack: contextlib.ExitStack) -> None:
        port_setting = os.environ.get("SMS_REPLIES_BENCH_CLICKHOUSE_PORT")
        self.pid: int | None = None
        if port_setting:
            self.host, self.port = "127.0.0.1", int(port_setting)
        elif clickhouse_server_binary() is None:
            raise Unavailable("clickhouse-server is not installed")
        else:
            server = stack.enter_context(local_clickhouse_server(root / "clickhouse-server"))
            self.host, self.port = server.host, server.port
            self.pid = _server_pid(root / "clickhouse-server")
        self.database = CH_DATABASE
        self.client = Client(self.host, port=self.port, send_receive_timeout=600)
        stack.callback(self.client.disconnect)
        self.features = ch_store.detect_features(self.client)

    def version(self) -> str:
        return f"clickhouse-server {self.features.version}"

    def load(self, generator: Generator) -> None:
        client = self.client
        client.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
        ch_store.ensure_tables(client, self.database, self.features)
        insert = f"INSERT INTO `{self.database}`.{TABLE} ({', '.join(COLUMN_NAMES)}) VALUES"
        for chunk in generator.chunks(CH_BATCH):
            client.execute(insert, _ch_columns(chunk, self.features), columnar=True)
        client.execute(
            f"INSERT INTO `{self.database}`.{CAMPAIGNS_TABLE} ({', '.join(_CAMPAIGN_NAMES)}) "
            "VALUES",
            [
                tuple(_epoch(v) if isinstance(v, datetime) else v for v in _campaign_row(c))
                for c in campaigns(generator.rows)
            ],
        )
        client.execute(f"OPTIMIZE TABLE `{self.database}`.{TABLE} FINAL")

    def size_bytes(self) -> int | None:
        rows = self.client.execute(
            "SELECT sum(bytes) FROM system.parts WHERE active AND database = %(db)s "
            "AND table = %(table)s",
            {"db": self.database, "table": TABLE},
        )
        return int(rows[0][0])

    def server_rss_bytes(self) -> int | None:
        return None if self.pid is None else _rss(self.pid)

    def url(self) -> StoreURL:
        return parse_store_url(
            f"clickhouse://{self.host}:{self.port}/{self.database}",
            default_duckdb=Path("unused.duckdb"),
        )


def _epoch(t: datetime) -> int:
    return int(t.astimezone(UTC).timestamp())


def _server_pid(path: Path) -> int | None:
    """The pid of the clickhouse-server whose data is under ``path`` (from /proc)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"--path={path}/".encode() in command:
            return int(proc.name)
    return None


def _rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
