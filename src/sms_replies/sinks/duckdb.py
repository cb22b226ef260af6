"""DuckDB sink: the embedded default store (``<data_dir>/replies.duckdb``).

Batches are bulk-loaded from an Arrow table with ``INSERT ... ON CONFLICT DO
NOTHING`` in one transaction. DuckDB allows one writing process, and a reading
process keeps the writer out: so the sink keeps the one read-write connection
for its whole life, and other processes (``sms-replies stats``, the API, an
analyst's ``open_reader``) run their statements through the sink's loopback
endpoint (:mod:`sms_replies.sinks.duckdb_endpoint`), on cursors of that
connection, beside the writes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import duckdb
import pyarrow as pa

from sms_replies.errors import SinkWriteError
from sms_replies.records import Reply
from sms_replies.schema import (
    COLUMN_NAMES,
    COLUMNS,
    ROW_ERRORS,
    TABLE,
    LogicalType,
    to_columns,
    unique_by_id,
)
from sms_replies.sinks.base import Sink, SinkContext
from sms_replies.sinks.duckdb_endpoint import StoreEndpoint

log = logging.getLogger(__name__)

_DUCKDB_TYPES: dict[LogicalType, str] = {
    "text": "VARCHAR",
    "boolean": "BOOLEAN",
    "integer": "INTEGER",
    "timestamp": "TIMESTAMPTZ",
    "text[]": "VARCHAR[]",
}
_ARROW_TYPES: dict[LogicalType, pa.DataType] = {
    "text": pa.string(),
    "boolean": pa.bool_(),
    "integer": pa.int32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "text[]": pa.list_(pa.string()),
}
ARROW_SCHEMA = pa.schema(
    [pa.field(c.name, _ARROW_TYPES[c.type], nullable=c.nullable) for c in COLUMNS]
)


def ddl() -> str:
    columns = ",\n  ".join(
        f"{c.name} {_DUCKDB_TYPES[c.type]}"
        + (" PRIMARY KEY" if c.name == "reply_id" else "")
        + ("" if c.nullable else " NOT NULL")
        for c in COLUMNS
    )
    return f"CREATE TABLE IF NOT EXISTS {TABLE} (\n  {columns}\n)"


_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMN_NAMES)}) "
    f"SELECT {', '.join(COLUMN_NAMES)} FROM batch ON CONFLICT DO NOTHING"
)


def connect(path: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the store; converts DuckDB's errors (a lock held by a writer: retriable)."""
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except (duckdb.IOException, duckdb.ConnectionException) as exc:
        raise SinkWriteError(f"cannot open {path}: {exc}", retriable=True) from None


class DuckDBSink(Sink):
    """Owns the store: one read-write connection from ``setup`` to ``close``.

    Other processes (API, CLI, analysts' Python) go through its
    :class:`~sms_replies.sinks.duckdb_endpoint.StoreEndpoint`: no reader can
    hold the file and starve the writes.
    """

    name = "duckdb"

    def __init__(self, path: Path, *, serve: bool = True) -> None:
        self.path = path
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lent_until = 0.0  # monotonic time until which the store is lent out
        self._guard = threading.Lock()  # a write and a lend never overlap
        self._endpoint = None
        if serve:
            self._endpoint = StoreEndpoint(
                path, self._serving_connection, self._lend, self._is_lent
            )

    @classmethod
    def from_settings(cls, settings: SinkContext) -> Self:
        return cls(settings.duckdb_path)

    async def setup(self) -> None:
        if self._endpoint is not None:
            self._endpoint.announce_opening()
        try:
            await asyncio.to_thread(self._connection)
            if self._endpoint is not None:
                await self._endpoint.start()
        except OSError as exc:
            raise SinkWriteError(f"duckdb store endpoint: {exc}", retriable=True) from None

    def _connection(self) -> duckdb.DuckDBPyConnection:
        """The connection, opened (and the table created or migrated) on first use."""
        if self._con is not None:
            return self._con
        if time.monotonic() < self._lent_until:
            raise SinkWriteError("the store is lent to another process", retriable=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = connect(self.path)
        try:
            con.execute(ddl())
            # Migration: columns added to the schema since the table was created.
            present = {row[0] for row in con.execute(f"DESCRIBE {TABLE}").fetchall()}
            for column in COLUMNS:
                if column.name not in present:
                    con.execute(
                        f"ALTER TABLE {TABLE} ADD COLUMN {column.name} {_DUCKDB_TYPES[column.type]}"
                    )
                    log.info("duckdb sink: added column %s", column.name)
        except duckdb.Error as exc:
            con.close()
            raise SinkWriteError(f"duckdb setup failed: {exc}", retriable=True) from None
        self._con = con
        log.info("duckdb sink ready at %s", self.path)
        return con

    async def write(self, batch: Sequence[Reply]) -> None:
        try:
            table = pa.Table.from_pydict(
                to_columns(unique_by_id(batch), datetime.now(UTC)), schema=ARROW_SCHEMA
            )
        except (pa.ArrowException, *ROW_ERRORS) as exc:
            raise SinkWriteError(f"replies not loadable: {exc}", retriable=False) from None
        await asyncio.to_thread(self._write, table)

    def _write(self, batch: pa.Table) -> None:
        with self._guard:
            self._write_locked(batch)

    def _write_locked(self, batch: pa.Table) -> None:
        cursor = self._connection().cursor()
        try:
            cursor.begin()
            cursor.register("batch", batch)
            cursor.execute(_INSERT)
            cursor.commit()
        except duckdb.ConstraintException as exc:
            raise SinkWriteError(f"duckdb rejected the batch: {exc}", retriable=False) from None
        except duckdb.Error as exc:
            # The next attempt starts from a fresh connection (an invalidated database
            # after an I/O error stays unusable).
            self._reset()
            raise SinkWriteError(f"duckdb write failed: {exc}", retriable=True) from None
        finally:
            cursor.close()

    def _serving_connection(self) -> duckdb.DuckDBPyConnection | None:
        """For the endpoint: the connection, reopened after a lend or an error; None if not."""
        con = self._con
        if con is not None:
            return con
        try:
            with self._guard:
                return self._connection()
        except SinkWriteError:
            return None

    def _lend(self, seconds: float) -> None:
        """Close the store and keep off it for ``seconds``; 0: take it back now."""
        with self._guard:
            if seconds <= 0:
                self._lent_until = 0.0
                return
            self._lent_until = time.monotonic() + seconds
            self._reset()

    def _is_lent(self) -> bool:
        return time.monotonic() < self._lent_until

    def _reset(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            con.close()

    async def close(self) -> None:
        if self._endpoint is not None:
            await self._endpoint.stop()
        await asyncio.to_thread(self._reset)
