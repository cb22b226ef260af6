"""Raw DuckDB connections to the store, next to a sink that writes to it (tests, tools).

The analytics read every store through :mod:`sms_replies.stores.readers`; this
module keeps the DuckDB-only helpers that hand out a raw connection.

DuckDB lets one process hold a file for writing, and a reader in another
process keeps that writer out. While the DuckDB sink runs it owns the file for
its whole life and serves other processes' statements over its loopback
endpoint (:mod:`sms_replies.stores.duckdb_endpoint`): :func:`open_reader` and
:func:`open_writer` then hand out a :class:`RemoteConnection` that runs each
``execute`` there (readers in READ ONLY transactions), so no reader can starve
the sink. Without a running sink they open the file itself, as before. A
caller that finds the file locked and no endpoint (a sink starting, another
program holding it) retries for ``timeout`` seconds, then raises
:class:`StoreBusyError` (retriable).

A store that does not exist yet (no reply written so far) or that lacks a
table reads as empty: :func:`open_reader` then provides empty temporary tables
with the same columns, so every query returns empty results instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from sms_replies.schema import CAMPAIGNS_TABLE as CAMPAIGNS_TABLE
from sms_replies.schema import TABLE
from sms_replies.stores.ddl import CAMPAIGNS, REPLIES, duckdb_create
from sms_replies.stores.errors import StoreBusyError as StoreBusyError
from sms_replies.stores.errors import StoreError as StoreError
from sms_replies.stores.readers import (
    DEFAULT_TIMEOUT,
    QUERY_TIMEOUT,
    RemoteConnection,
    RemoteResult,
    borrowed_store,
    connect_duckdb,
    lend_store,
)

__all__ = [
    "CAMPAIGNS_DDL",
    "CAMPAIGNS_TABLE",
    "DEFAULT_TIMEOUT",
    "QUERY_TIMEOUT",
    "RemoteConnection",
    "RemoteResult",
    "StoreBusyError",
    "StoreError",
    "borrowed_store",
    "connect_duckdb",
    "has_column",
    "lend_store",
    "open_reader",
    "open_writer",
    "table_columns",
]

CAMPAIGNS_DDL = duckdb_create(CAMPAIGNS)

_connect_with_retry = connect_duckdb  # its old name (privacy_cli)


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
        con = connect_duckdb(path, read_only=True, timeout=timeout)
    else:
        con = duckdb.connect(":memory:")
    try:
        for table, ddl in ((TABLE, duckdb_create(REPLIES)), (CAMPAIGNS_TABLE, CAMPAIGNS_DDL)):
            if not _table_exists(con, table):
                if isinstance(con, RemoteConnection):  # each statement is its own transaction
                    _create_through_owner(path, ddl, timeout)
                else:
                    con.execute(_temp(ddl))
        yield con
    except duckdb.Error as exc:
        raise StoreError(f"reading the store {path} failed: {exc}") from None
    finally:
        con.close()


def _create_through_owner(path: Path, ddl: str, timeout: float) -> None:
    """A missing table, created in the owner's store (readers cannot keep temporary ones)."""
    writer = connect_duckdb(path, read_only=False, timeout=timeout)
    try:
        writer.execute(ddl)
    finally:
        writer.close()


@contextmanager
def open_writer(
    path: Path, *, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection (creating the file and the campaigns table), closed on exit.

    For the analysts' own small writes (campaign declarations): hold it briefly,
    the sink waits for it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    con = connect_duckdb(path, read_only=False, timeout=timeout)
    try:
        con.execute(CAMPAIGNS_DDL)
        yield con
    except duckdb.Error as exc:
        if isinstance(exc, duckdb.ConstraintException):
            raise
        raise StoreError(f"writing to the store {path} failed: {exc}") from None
    finally:
        con.close()


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> frozenset[str]:
    """The columns ``table`` (persistent or temporary) has."""
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table]
    ).fetchall()
    return frozenset(str(name) for (name,) in rows)


def has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    """Whether ``table`` (persistent or temporary) has ``column``."""
    row = con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = ?",
        [table, column],
    ).fetchone()
    return bool(row and row[0])
