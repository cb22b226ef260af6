"""Opening the DuckDB store from the analyst side, next to a sink that writes to it.

DuckDB lets one process hold a file for writing; the DuckDB sink opens the file
for each batch and closes it right after (milliseconds). Analysts' readers do
the same: open read-only, run the queries, close. A reader that arrives while
the sink holds the lock retries for a short while (``timeout``) before giving
up with :class:`StoreBusyError` (retriable). The sink, symmetrically, retries when a
reader holds the file.

A store that does not exist yet (no reply written so far) or that lacks a
table reads as empty: :func:`open_reader` then provides empty temporary tables
with the same columns, so every query returns empty results instead of failing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from sms_replies.errors import SmsRepliesError
from sms_replies.schema import TABLE
from sms_replies.sinks.duckdb import ddl as replies_ddl

log = logging.getLogger(__name__)

CAMPAIGNS_TABLE = "campaigns"

CAMPAIGNS_DDL = f"""CREATE TABLE IF NOT EXISTS {CAMPAIGNS_TABLE} (
  name VARCHAR PRIMARY KEY,
  channel VARCHAR NOT NULL CHECK (channel IN ('long_number', 'short_number')),
  recipient VARCHAR,
  start_at TIMESTAMPTZ NOT NULL,
  end_at TIMESTAMPTZ NOT NULL,
  delivered BIGINT CHECK (delivered IS NULL OR delivered >= 0),
  created_at TIMESTAMPTZ NOT NULL,
  CHECK (end_at > start_at),
  CHECK ((channel = 'long_number') = (recipient IS NOT NULL))
)"""

DEFAULT_TIMEOUT = 2.0  # seconds a reader or a campaign writer waits for the sink's lock


class StoreError(SmsRepliesError):
    """The DuckDB store cannot be opened or read (not a DuckDB file, I/O error...)."""


class StoreBusyError(StoreError):
    """Another process held the store's write lock for longer than the caller waits."""

    retriable = True


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    message = str(exc)
    # Another process holds the file's lock (IOException), or this process has
    # it open with another configuration (read-only vs read-write: ConnectionException).
    return "lock" in message.lower() or "different configuration" in message


def _connect_with_retry(
    path: Path, *, read_only: bool, timeout: float
) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if not _is_lock_conflict(exc):
                raise StoreError(f"cannot open the store {path}: {exc}") from None
            if time.monotonic() + delay > deadline:
                raise StoreBusyError(
                    f"the store {path} stayed locked by another process for {timeout:g} s; "
                    "try again"
                ) from None
            log.debug("store %s locked, retrying in %.3f s", path, delay)
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ?",
        [table],
    ).fetchone()
    return bool(row and row[0])


def _temp(ddl: str) -> str:
    return ddl.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE", 1)


@contextmanager
def open_reader(
    path: Path, *, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the store, closed on exit; keep it for one request only.

    Raises :class:`StoreBusyError` when the write lock is still held after ``timeout``
    seconds, :class:`StoreError` when the file is not a usable DuckDB database.
    A missing file or missing tables read as empty tables.
    """
    if path.exists():
        con = _connect_with_retry(path, read_only=True, timeout=timeout)
    else:
        con = duckdb.connect(":memory:")
    try:
        for table, ddl in ((TABLE, replies_ddl()), (CAMPAIGNS_TABLE, CAMPAIGNS_DDL)):
            if not _table_exists(con, table):
                con.execute(_temp(ddl))
        yield con
    except duckdb.Error as exc:
        raise StoreError(f"reading the store {path} failed: {exc}") from None
    finally:
        con.close()


@contextmanager
def open_writer(
    path: Path, *, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection (creating the file and the campaigns table), closed on exit.

    For the analysts' own small writes (campaign declarations): hold it briefly,
    the sink waits for it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    con = _connect_with_retry(path, read_only=False, timeout=timeout)
    try:
        con.execute(CAMPAIGNS_DDL)
        yield con
    except duckdb.Error as exc:
        if isinstance(exc, duckdb.ConstraintException):
            raise
        raise StoreError(f"writing to the store {path} failed: {exc}") from None
    finally:
        con.close()


def has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    """Whether ``table`` (persistent or temporary) has ``column``."""
    row = con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = ?",
        [table, column],
    ).fetchone()
    return bool(row and row[0])
