"""DuckDB: opening the file, its tables, and the writes the sink makes.

Public API:

- :func:`connect` ``(path, *, read_only=False, timeout=0.0)``: a connection to
  the file. DuckDB lets one process hold a file for writing: a lock held by
  another process is retried for ``timeout`` seconds, then
  :class:`~sms_replies.stores.errors.StoreBusyError`; any other failure is a
  :class:`~sms_replies.stores.errors.StoreError`. (While the DuckDB sink runs it
  owns the file: other processes go through its endpoint,
  :mod:`sms_replies.stores.duckdb_endpoint`.)
- :func:`ensure_tables` ``(con)``: creates ``replies``, ``campaigns`` and
  ``optouts`` if missing and adds the columns the lists gained since.
- :func:`write_batch` ``(con, replies, decisions, ingested_at)``: one
  transaction: the replies (``ON CONFLICT DO NOTHING``: the first stored
  version wins) and the opt-out decisions (an upsert that keeps the later
  decision, see :mod:`sms_replies.optout`).
- :func:`table_exists`, :data:`ARROW_SCHEMA` (the replies as Arrow, also used by
  the Parquet sink).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from sms_replies.optout import Decision
from sms_replies.records import Reply
from sms_replies.schema import COLUMNS, ROW_ERRORS, LogicalType, to_columns, utc_from_ms
from sms_replies.stores.ddl import (
    OPTOUTS,
    REPLIES,
    TABLES,
    duckdb_add_column,
    duckdb_create,
)
from sms_replies.stores.errors import (
    StoreBusyError,
    StoreDataError,
    StoreError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

_ARROW_TYPES: dict[LogicalType, pa.DataType] = {
    "text": pa.string(),
    "boolean": pa.bool_(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "text[]": pa.list_(pa.string()),
}
ARROW_SCHEMA = pa.schema(
    [pa.field(c.name, _ARROW_TYPES[c.type], nullable=c.nullable) for c in COLUMNS]
)
_OPTOUT_ARROW = pa.schema(
    [pa.field(c.name, _ARROW_TYPES[c.type], nullable=c.nullable) for c in OPTOUTS.columns]
)

_INSERT_REPLIES = (
    f"INSERT INTO {REPLIES.name} ({', '.join(REPLIES.column_names)}) "
    f"SELECT {', '.join(REPLIES.column_names)} FROM reply_batch ON CONFLICT DO NOTHING"
)


def _later(new: str, old: str) -> str:
    """SQL: the decision in ``new`` ranks above the one in ``old`` (see Decision.rank)."""
    new_out = f"CASE WHEN {new}.status = 'opted_out' THEN 1 ELSE 0 END"
    old_out = f"CASE WHEN {old}.status = 'opted_out' THEN 1 ELSE 0 END"
    return (
        f"{new}.since > {old}.since OR ({new}.since = {old}.since AND "
        f"({new_out} > {old_out} OR ({new_out} = {old_out} AND {new}.reply_id > {old}.reply_id)))"
    )


_OPTOUT_NAMES = ", ".join(OPTOUTS.column_names)
UPSERT_OPTOUTS = (
    f"INSERT INTO {OPTOUTS.name} ({_OPTOUT_NAMES}) SELECT {_OPTOUT_NAMES} FROM optout_batch "
    f"ON CONFLICT ({OPTOUTS.key}) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in OPTOUTS.column_names if name != "sender")
    + f" WHERE {_later('excluded', OPTOUTS.name)}"
)


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    message = str(exc)
    # Another process holds the file's lock (IOException), or this process has
    # it open with another configuration (read-only vs read-write: ConnectionException).
    return "lock" in message.lower() or "different configuration" in message


def connect(
    path: Path, *, read_only: bool = False, timeout: float = 0.0
) -> duckdb.DuckDBPyConnection:
    """The file, opened; a lock held elsewhere is retried for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if not _is_lock_conflict(exc):
                if isinstance(exc, duckdb.IOException | duckdb.ConnectionException):
                    raise StoreUnavailableError(f"cannot open {path}: {exc}") from None
                raise StoreError(f"cannot open the store {path}: {exc}") from None
            if time.monotonic() + delay > deadline:
                raise StoreBusyError(
                    f"the store {path} stayed locked by another process for {timeout:g} s; "
                    f"try again ({exc})"
                ) from None
        log.debug("store %s locked, retrying in %.3f s", path, delay)
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ?",
        [table],
    ).fetchone()
    return bool(row and row[0])


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the missing tables and add the missing columns (StoreError if that fails)."""
    try:
        for table in TABLES:
            con.execute(duckdb_create(table))
            present = {
                str(row[0])
                for row in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' "
                    "AND database_name = current_database() AND table_name = ?",
                    [table.name],
                ).fetchall()
            }
            for column in table.columns:
                if column.name not in present:
                    con.execute(duckdb_add_column(table, column))
                    log.info("duckdb: added column %s.%s", table.name, column.name)
    except duckdb.Error as exc:
        raise StoreError(f"duckdb: creating the tables failed: {exc}", retriable=True) from None


def replies_table(replies: Sequence[Reply], ingested_at: datetime) -> pa.Table:
    """The replies as Arrow; StoreDataError for a reply whose values do not fit."""
    try:
        return pa.Table.from_pydict(to_columns(replies, ingested_at), schema=ARROW_SCHEMA)
    except (pa.ArrowException, *ROW_ERRORS) as exc:
        raise StoreDataError(f"replies not loadable: {exc}") from None


def decisions_table(decisions: Sequence[Decision]) -> pa.Table:
    columns = {
        "sender": [d.sender for d in decisions],
        "status": [d.status for d in decisions],
        "since": [utc_from_ms(d.since_ms) for d in decisions],
        "reply_id": [d.reply_id for d in decisions],
        "source": [d.source for d in decisions],
    }
    try:
        return pa.Table.from_pydict(columns, schema=_OPTOUT_ARROW)
    except (pa.ArrowException, *ROW_ERRORS) as exc:
        raise StoreDataError(f"opt-out decisions not loadable: {exc}") from None


def write_batch(
    con: duckdb.DuckDBPyConnection, replies: pa.Table, decisions: pa.Table | None = None
) -> None:
    """Replies and opt-out decisions in one transaction on a cursor of ``con``.

    StoreDataError when DuckDB rejects the data; StoreUnavailableError for any
    other failure (the caller should reopen the file: an invalidated database
    after an I/O error stays unusable).
    """
    cursor = con.cursor()
    try:
        cursor.begin()
        cursor.register("reply_batch", replies)
        cursor.execute(_INSERT_REPLIES)
        if decisions is not None and decisions.num_rows:
            cursor.register("optout_batch", decisions)
            cursor.execute(UPSERT_OPTOUTS)
        cursor.commit()
    except duckdb.ConstraintException as exc:
        raise StoreDataError(f"duckdb rejected the batch: {exc}") from None
    except duckdb.Error as exc:
        raise StoreUnavailableError(f"duckdb write failed: {exc}") from None
    finally:
        cursor.close()
