"""DuckDB sink: the embedded default store (``<data_dir>/replies.duckdb``).

Batches are bulk-loaded from an Arrow table with ``INSERT ... ON CONFLICT DO
NOTHING`` in one transaction. The database file is opened for each batch and
closed right after, so that other processes (``sms-replies stats``, the API)
can open it read-only between writes: DuckDB allows one writing process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import duckdb
import pyarrow as pa

from sms_replies.contract import Reply
from sms_replies.errors import SinkWriteError
from sms_replies.schema import (
    COLUMN_NAMES,
    COLUMNS,
    ROW_ERRORS,
    TABLE,
    LogicalType,
    to_columns,
    unique_by_id,
)
from sms_replies.settings import Settings
from sms_replies.sinks.base import Sink

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
    name = "duckdb"

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.duckdb_path)

    async def setup(self) -> None:
        await asyncio.to_thread(self._setup)

    def _setup(self) -> None:
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
        finally:
            con.close()
        log.info("duckdb sink ready at %s", self.path)

    async def write(self, batch: Sequence[Reply]) -> None:
        try:
            table = pa.Table.from_pydict(
                to_columns(unique_by_id(batch), datetime.now(UTC)), schema=ARROW_SCHEMA
            )
        except (pa.ArrowException, *ROW_ERRORS) as exc:
            raise SinkWriteError(f"replies not loadable: {exc}", retriable=False) from None
        await asyncio.to_thread(self._write, table)

    def _write(self, batch: pa.Table) -> None:
        con = connect(self.path)
        try:
            con.begin()
            con.register("batch", batch)
            con.execute(_INSERT)
            con.commit()
        except duckdb.ConstraintException as exc:
            raise SinkWriteError(f"duckdb rejected the batch: {exc}", retriable=False) from None
        except duckdb.Error as exc:
            raise SinkWriteError(f"duckdb write failed: {exc}", retriable=True) from None
        finally:
            con.close()
