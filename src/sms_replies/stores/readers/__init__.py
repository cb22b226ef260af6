"""Synchronous readers of every store, one interface: run a statement, get its rows.

:func:`open_store` (a context manager) gives a :class:`Reader` for a
:class:`~sms_replies.stores.url.StoreURL`:

- DuckDB (:class:`DuckDBReader`): while the DuckDB sink runs it owns the file
  and serves other processes' statements over its loopback endpoint
  (:mod:`sms_replies.stores.duckdb_endpoint`): the reader then runs each
  statement there in a READ ONLY transaction (:class:`RemoteConnection`), so no
  reader can starve the sink. Without a running sink it opens the file itself,
  read-only. A file locked by another program: retried for ``timeout`` seconds,
  then :class:`StoreBusyError`. A file that does not exist reads as a store
  without tables (``exists`` is False).
- PostgreSQL (:class:`PostgresReader`): psycopg 3, one connection in a read-only
  transaction, ``statement_timeout`` and ``connect_timeout`` from ``timeout``.
- ClickHouse (:class:`ClickHouseReader`): clickhouse-driver, native protocol.

Statements are SQLAlchemy Core constructs compiled for the store's dialect
(:mod:`sms_replies.stores.dialects`), values bound in the driver's style.
``columns(table)`` tells which tables and columns the store has (empty: no
such table), so queries can skip a table that was never created and columns
an older release did not write. Driver errors become :class:`StoreError` (or
:class:`StoreBusyError`, retriable) at this boundary.

The modules: :mod:`._base` (the interface, what readers share, the default
timeouts), :mod:`._duckdb_access` (opening a DuckDB store: the sink's endpoint or
the file), :mod:`._duckdb`, :mod:`._postgres`, :mod:`._clickhouse` (one reader
each), :mod:`._open` (``open_store``).
"""

from sms_replies.stores.readers._base import (
    DEFAULT_TIMEOUT,
    QUERY_TIMEOUT,
    Reader,
    compile_statement,
)
from sms_replies.stores.readers._clickhouse import ClickHouseReader, collapsed
from sms_replies.stores.readers._duckdb import DuckDBReader
from sms_replies.stores.readers._duckdb_access import (
    RemoteConnection,
    RemoteResult,
    borrowed_store,
    connect_duckdb,
    lend_store,
)
from sms_replies.stores.readers._open import open_store
from sms_replies.stores.readers._postgres import PostgresReader

__all__ = [
    "DEFAULT_TIMEOUT",
    "QUERY_TIMEOUT",
    "ClickHouseReader",
    "DuckDBReader",
    "PostgresReader",
    "Reader",
    "RemoteConnection",
    "RemoteResult",
    "borrowed_store",
    "collapsed",
    "compile_statement",
    "connect_duckdb",
    "lend_store",
    "open_store",
]
