"""Rows per second of each built-in sink, at batch sizes 1,000 and 10,000.

Each (sink, batch size) run writes several batches of distinct synthetic
replies into a fresh table (a new directory, schema or database), timing the
``write`` calls only (``setup`` excluded). ``run()`` returns the figures as a
list of dicts for ``make bench`` to aggregate; ``python -m benchmarks.sinks``
prints them as a table.

Stores: DuckDB and Parquet in a temporary directory; PostgreSQL at
``SMS_REPLIES_BENCH_POSTGRES_DSN`` (default the local test server); ClickHouse
at ``SMS_REPLIES_BENCH_CLICKHOUSE_PORT`` on 127.0.0.1 if set, else a
``clickhouse-server`` started for the run when the binary is installed. A store
that cannot be reached is reported as skipped, not measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import pyarrow
from clickhouse_driver import Client
from rich.console import Console
from rich.table import Table
from tests.clickhouse_server import clickhouse_server_binary, local_clickhouse_server

from sms_replies.errors import SinkWriteError
from sms_replies.sinks.base import Sink
from sms_replies.sinks.clickhouse import ClickHouseSink, ClickHouseSinkSettings
from sms_replies.sinks.duckdb import DuckDBSink
from sms_replies.sinks.parquet import ParquetSink
from sms_replies.sinks.postgres import PostgresSink
from sms_replies.sinks.testing import make_replies

log = logging.getLogger(__name__)

SINKS = ("duckdb", "parquet", "postgres", "clickhouse")
BATCH_SIZES = (1_000, 10_000)
ROWS_PER_RUN = 50_000  # batches per run = this / batch size, at least 3
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"

# Builds a fresh sink for one run and drops its table afterwards.
SinkFactory = Callable[[], contextlib.AbstractAsyncContextManager[Sink]]


def run(
    sinks: Sequence[str] = SINKS,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    rows_per_run: int = ROWS_PER_RUN,
) -> list[dict[str, Any]]:
    """Measure every sink at every batch size; one dict per (sink, batch size)."""
    return asyncio.run(_run(sinks, batch_sizes, rows_per_run))


async def _run(
    sinks: Sequence[str], batch_sizes: Sequence[int], rows_per_run: int
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sink-bench-") as scratch:
        root = Path(scratch)
        with contextlib.ExitStack() as servers:
            for name in sinks:
                store, factory, reason = await _store(name, root, servers)
                for size in batch_sizes:
                    batches = max(3, rows_per_run // size)
                    row: dict[str, Any] = {
                        "sink": name,
                        "store": store,
                        "batch_size": size,
                        "batches": batches,
                    }
                    if factory is None:
                        results.append({**row, "skipped": reason})
                        continue
                    seconds = await _measure(factory, size, batches)
                    results.append(
                        {
                            **row,
                            "rows": size * batches,
                            "seconds": round(seconds, 3),
                            "rows_per_s": round(size * batches / seconds),
                        }
                    )
    return results


async def _measure(factory: SinkFactory, size: int, batches: int) -> float:
    replies = make_replies(size * batches, days=7)
    async with factory() as sink:
        await sink.setup()
        start = time.perf_counter()
        for i in range(batches):
            await sink.write(replies[i * size : (i + 1) * size])
        return time.perf_counter() - start


async def _store(
    name: str, root: Path, servers: contextlib.ExitStack
) -> tuple[str, SinkFactory | None, str]:
    """(store version, factory of fresh sinks or None, reason when None)."""
    if name == "duckdb":
        return f"duckdb {duckdb.__version__}", _in_directory(root, _duckdb_sink), ""
    if name == "parquet":
        return f"pyarrow {pyarrow.__version__}", _in_directory(root, ParquetSink), ""
    if name == "postgres":
        return await _postgres()
    if name == "clickhouse":
        return _clickhouse(root, servers)
    raise ValueError(f"unknown sink {name!r}")


def _duckdb_sink(directory: Path) -> Sink:
    return DuckDBSink(directory / "replies.duckdb")


def _in_directory(root: Path, build: Callable[[Path], Sink]) -> SinkFactory:
    @contextlib.asynccontextmanager
    async def fresh() -> AsyncIterator[Sink]:
        sink = build(root / uuid.uuid4().hex / "store")
        try:
            yield sink
        finally:
            await sink.close()

    return fresh


async def _postgres() -> tuple[str, SinkFactory | None, str]:
    dsn = os.environ.get("SMS_REPLIES_BENCH_POSTGRES_DSN", DEFAULT_PG_DSN)
    try:
        con = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return "postgresql", None, f"unreachable: {exc}"
    try:
        version = str(await con.fetchval("SHOW server_version")).split()[0]
    finally:
        await con.close()

    @contextlib.asynccontextmanager
    async def fresh() -> AsyncIterator[Sink]:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        sink = PostgresSink(dsn, schema=schema)
        try:
            yield sink
        finally:
            await sink.close()
            admin = await asyncpg.connect(dsn)
            try:
                await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await admin.close()

    return f"postgresql {version}", fresh, ""


def _clickhouse(root: Path, servers: contextlib.ExitStack) -> tuple[str, SinkFactory | None, str]:
    port_setting = os.environ.get("SMS_REPLIES_BENCH_CLICKHOUSE_PORT")
    if port_setting:
        host, port = "127.0.0.1", int(port_setting)
    elif clickhouse_server_binary() is None:
        return "clickhouse", None, "clickhouse-server is not installed"
    else:
        server = servers.enter_context(local_clickhouse_server(root / "clickhouse-server"))
        host, port = server.host, server.port
    admin = Client(host, port=port)
    try:
        version = admin.execute("SELECT version()")[0][0]
    finally:
        admin.disconnect()

    @contextlib.asynccontextmanager
    async def fresh() -> AsyncIterator[Sink]:
        database = f"bench_{uuid.uuid4().hex[:12]}"
        sink = ClickHouseSink(ClickHouseSinkSettings(host=host, port=port, database=database))
        try:
            yield sink
        finally:
            await sink.close()
            dropper = Client(host, port=port)
            try:
                dropper.execute(f"DROP DATABASE IF EXISTS `{database}`")
            finally:
                dropper.disconnect()

    return f"clickhouse-server {version}", fresh, ""


def render(results: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="Sink throughput (write calls only, fresh table per run)")
    for column in ("sink", "store", "batch size", "batches", "rows", "seconds", "rows/s"):
        table.add_column(column, justify="left" if column in ("sink", "store") else "right")
    for r in results:
        if "skipped" in r:
            table.add_row(
                r["sink"], r["store"], f"{r['batch_size']:,}", "-", "-", "-", r["skipped"]
            )
        else:
            table.add_row(
                r["sink"],
                r["store"],
                f"{r['batch_size']:,}",
                str(r["batches"]),
                f"{r['rows']:,}",
                f"{r['seconds']:.2f}",
                f"{r['rows_per_s']:,}",
            )
    return table


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        results = run()
    except SinkWriteError as exc:
        log.error("benchmark aborted: %s", exc)
        raise SystemExit(1) from None
    Console(width=110).print(render(results))


if __name__ == "__main__":
    main()
