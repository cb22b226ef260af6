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
"""

from __future__ import annotations

import http.client
import importlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, cast
from urllib.parse import urlsplit

import duckdb
import orjson
from sqlalchemy import column, table
from sqlalchemy import insert as sa_insert
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql import ClauseElement, visitors
from sqlalchemy.sql.selectable import TableClause
from sqlalchemy.types import Integer, String, TypeDecorator, TypeEngine

from sms_replies.schema import COLUMNS, TABLE, LogicalType
from sms_replies.stores.dialects import (
    CLICKHOUSE_DATETIME64,
    DIALECTS,
    ClickHouseDialect,
    Flag,
    Instant,
)
from sms_replies.stores.duckdb_endpoint import (
    EndpointInfo,
    Mode,
    decode_value,
    encode_params,
    read_endpoint,
)
from sms_replies.stores.errors import StoreBusyError, StoreError, StoreUnavailableError
from sms_replies.stores.url import Backend, StoreURL

log = logging.getLogger(__name__)


DEFAULT_TIMEOUT = 2.0  # seconds a reader or a campaign writer waits for the sink's lock


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    message = str(exc)
    # Another process holds the file's lock (IOException), or this process has
    # it open with another configuration (read-only vs read-write: ConnectionException).
    return "lock" in message.lower() or "different configuration" in message


QUERY_TIMEOUT = 60.0  # seconds one statement may take through the sink's endpoint


class RemoteResult:
    """The rows of one statement run by the store's owner (the subset of DuckDB's API used)."""

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        self.description = [(name, None, None, None, None, None, None) for name in columns]
        self._rows = rows
        self._next = 0

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._next = self._rows[self._next :], len(self._rows)
        return rows


class RemoteConnection:
    """Runs each ``execute`` through the DuckDB sink's endpoint (see module docstring).

    Duck-typed as a DuckDB connection for the analytics code: ``execute(sql,
    params)`` returning ``fetchone``/``fetchall``/``description``, and ``close``.
    A read-only one runs every statement in a READ ONLY transaction; a writer's
    statements each commit on their own. DuckDB errors come back as the same
    ``duckdb`` exception classes.
    """

    def __init__(self, endpoint: EndpointInfo, mode: Mode, timeout: float = QUERY_TIMEOUT):
        url = urlsplit(endpoint.url or "")
        self.mode = mode
        self._headers = {
            "Authorization": f"Bearer {endpoint.token}",
            "Content-Type": "application/json",
        }
        self._http = http.client.HTTPConnection(
            url.hostname or "127.0.0.1", url.port, timeout=timeout
        )

    def ping(self) -> bool | None:
        """Whether the owner holds the store open; None: nothing answers, or it lent the store."""
        try:
            status, body = self._request("GET", "/ping", None)
        except OSError:
            return None
        answer = orjson.loads(body) if status == 200 else {}
        if answer.get("lent"):
            return None  # the borrower, or anyone after it, opens the file itself
        return bool(answer.get("ok"))

    def execute(self, sql: str, params: Any = None) -> RemoteResult:
        payload = orjson.dumps({"sql": sql, "params": encode_params(params), "mode": self.mode})
        try:
            status, body = self._request("POST", "/execute", payload)
        except OSError as exc:
            raise StoreBusyError(f"the DuckDB sink stopped answering: {exc}") from None
        answer = orjson.loads(body)
        if status == 200:
            rows = [tuple(decode_value(row)) for row in answer["rows"]]
            return RemoteResult(answer["columns"], rows)
        if status == 422:
            error = getattr(duckdb, str(answer.get("error")), duckdb.Error)
            if not (isinstance(error, type) and issubclass(error, duckdb.Error)):
                error = duckdb.Error
            raise error(answer.get("message", "error"))
        if status == 503:
            raise StoreBusyError("the DuckDB sink is reopening the store; try again")
        raise StoreError(f"the DuckDB sink's endpoint answered {status}: {answer}")

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        self._http.request(method, path, body=body, headers=self._headers)
        response = self._http.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self._http.close()


def _remote(path: Path, *, read_only: bool) -> RemoteConnection | bool | None:
    """A connection through the store's owner; None: no owner; True: the owner is opening."""
    endpoint = read_endpoint(path)
    if endpoint is None:
        return None
    if endpoint.url is None:
        return True
    remote = RemoteConnection(endpoint, "read" if read_only else "write")
    answer = remote.ping()
    if answer:
        return remote
    remote.close()
    # Reopening: wait, as for a lock. Lent or not serving: try the file (a lock
    # conflict then waits as well).
    return True if answer is False else None


def connect_duckdb(path: Path, *, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
    """Through the sink's endpoint while a sink owns the store, else the file itself.

    The returned object is a real DuckDB connection or a :class:`RemoteConnection`
    (typed as the former: the analytics code uses only what both provide).
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        remote = _remote(path, read_only=read_only)
        if isinstance(remote, RemoteConnection):
            return cast(duckdb.DuckDBPyConnection, remote)
        try:
            if remote is None:  # nobody owns the store: open it (the owner waits if starting)
                return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if not _is_lock_conflict(exc):
                raise StoreError(f"cannot open the store {path}: {exc}") from None
        if time.monotonic() + delay > deadline:
            raise StoreBusyError(
                f"the store {path} stayed locked by another process for {timeout:g} s; try again"
            ) from None
        log.debug("store %s locked or being opened, retrying in %.3f s", path, delay)
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@contextmanager
def borrowed_store(path: Path, seconds: float = 300.0) -> Iterator[bool]:
    """The DuckDB sink keeps off the file inside the block (at most ``seconds``).

    For work on the file itself (erasure's rewrite, a backup): open it with
    :func:`open_writer` / :func:`open_reader` inside; they then open the file,
    not the sink's endpoint. Yields whether a sink lent it (False: none runs).
    """
    lent = lend_store(path, seconds)
    try:
        yield lent
    finally:
        if lent:
            lend_store(path, 0)


def lend_store(path: Path, seconds: float, *, timeout: float = 10.0) -> bool:
    """Ask the DuckDB sink that owns ``path`` to close it and keep off it for ``seconds``.

    For a program that needs the file itself (a backup, a maintenance tool):
    call this, then open the file; the sink's writes wait meanwhile, as for a
    lock, and it reopens the store when the time is up (``seconds=0``: take it
    back now). False: no sink owns it.
    """
    endpoint = read_endpoint(path)
    if endpoint is None or endpoint.url is None:
        return False
    remote = RemoteConnection(endpoint, "write", timeout=timeout)
    try:
        status, body = remote._request("POST", "/lend", orjson.dumps({"seconds": seconds}))
    except OSError as exc:
        raise StoreBusyError(f"the DuckDB sink did not answer: {exc}") from None
    finally:
        remote.close()
    if status != 200:
        raise StoreError(f"the DuckDB sink refused to lend the store: {body!r}")
    return True


# -- one interface ----------------------------------------------------------------------

#: Timestamp and boolean columns of every table (the others need no conversion).
_TIMESTAMPS: Final = frozenset(
    {c.name for c in COLUMNS if c.type == "timestamp"}
    | {"start_at", "end_at", "created_at", "since"}
)
_BOOLEANS: Final = frozenset(c.name for c in COLUMNS if c.type == "boolean")
_LOGICAL: Final[dict[str, LogicalType]] = {c.name: c.type for c in COLUMNS}


def _column_type(name: str) -> TypeEngine[Any]:
    if name in _TIMESTAMPS:
        return Instant()
    if name in _BOOLEANS:
        return Flag()
    if _LOGICAL.get(name) == "integer" or name == "delivered":
        return Integer()
    return String()


def compile_statement(stmt: ClauseElement, dialect: Dialect) -> tuple[str, Any]:
    """SQL text and bound values of ``stmt`` in ``dialect``'s parameter style."""
    compiled: Any = stmt.compile(dialect=dialect)
    params: dict[str, Any] = dict(compiled.construct_params())
    for bind, name in compiled.bind_names.items():
        bind_type = bind.type
        if isinstance(bind_type, TypeDecorator) and name in params:
            params[name] = bind_type.process_bind_param(params[name], dialect)
    if dialect.paramstyle == "qmark":
        return compiled.string, [params[name] for name in compiled.positiontup or ()]
    return compiled.string, params


class Reader(Protocol):
    """What every store's reader offers the analytics queries."""

    backend: Backend
    dialect: Dialect
    url: StoreURL

    @property
    def exists(self) -> bool:
        """Whether the store exists (a DuckDB file; a server always does)."""
        ...

    def columns(self, name: str) -> frozenset[str]:
        """The columns of table ``name``; empty when the store has no such table."""
        ...

    def table(self, name: str) -> TableClause:
        """Table ``name`` as a SQLAlchemy construct (its known columns, typed, in its schema)."""
        ...

    def fetch(self, stmt: ClauseElement) -> list[tuple[Any, ...]]:
        """The rows of ``stmt``; timestamps as aware UTC datetimes, booleans as bool."""
        ...

    def write(self, stmt: ClauseElement) -> int:
        """Run a write (update, delete); the number of rows it touched, when known."""
        ...

    def insert(self, name: str, row: dict[str, Any]) -> None:
        """Add one row to table ``name``."""
        ...

    def close(self) -> None: ...


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


class _BaseReader:
    backend: Backend
    url: StoreURL
    schema: str | None = None

    def __init__(self) -> None:
        self.dialect = DIALECTS[self.backend]
        self._catalog: dict[str, frozenset[str]] | None = None

    @property
    def exists(self) -> bool:
        return True

    def _load_catalog(self) -> dict[str, frozenset[str]]:
        raise NotImplementedError

    def columns(self, name: str) -> frozenset[str]:
        if self._catalog is None:
            self._catalog = self._load_catalog()
        return self._catalog.get(name, frozenset())

    def table(self, name: str) -> TableClause:
        names = sorted(self.columns(name))
        return table(name, *(column(n, _column_type(n)) for n in names), schema=self.schema)

    def fetch(self, stmt: ClauseElement) -> list[tuple[Any, ...]]:
        sql, params = compile_statement(stmt, self.dialect)
        log.debug("%s: %s %s", self.backend, sql, params)
        return [tuple(_utc(v) for v in row) for row in self._run(sql, params)]

    def write(self, stmt: ClauseElement) -> int:
        sql, params = compile_statement(stmt, self.dialect)
        return self._run_write(sql, params)

    def insert(self, name: str, row: dict[str, Any]) -> None:
        self.write(sa_insert(self.table(name)).values(**row))

    def _run(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _run_write(self, sql: str, params: Any) -> int:
        raise NotImplementedError


# -- DuckDB -----------------------------------------------------------------------------


class DuckDBReader(_BaseReader):
    backend: Backend = "duckdb"

    def __init__(
        self, url: StoreURL, *, timeout: float = DEFAULT_TIMEOUT, write: bool = False
    ) -> None:
        super().__init__()
        self.url = url
        assert url.path is not None
        self.path = url.path
        self._exists = self.path.exists()
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = connect_duckdb(self.path, read_only=False, timeout=timeout)
            self._exists = True
        elif self._exists:
            self._con = connect_duckdb(self.path, read_only=True, timeout=timeout)
        else:
            self._con = duckdb.connect(":memory:")

    @property
    def exists(self) -> bool:
        return self._exists

    def _load_catalog(self) -> dict[str, frozenset[str]]:
        rows = self._execute(
            "SELECT table_name, column_name FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main'",
            [],
        )
        catalog: dict[str, set[str]] = {}
        for name, col in rows:
            catalog.setdefault(str(name), set()).add(str(col))
        return {k: frozenset(v) for k, v in catalog.items()}

    def _execute(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        try:
            result = self._con.execute(sql, params)
            return result.fetchall() if result.description else []
        except duckdb.Error as exc:
            raise StoreError(f"reading the store {self.path} failed: {exc}") from None

    def _run(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        return self._execute(sql, params)

    def _run_write(self, sql: str, params: Any) -> int:
        rows = self._execute(sql, params)
        return len(rows)

    def refresh(self) -> None:
        """Read the catalog again (after creating a table)."""
        self._catalog = None

    def raw(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection (or the sink endpoint's stand-in), for DDL."""
        return self._con

    def close(self) -> None:
        self._con.close()


# -- PostgreSQL -------------------------------------------------------------------------


def _driver(module: str, extra: str) -> Any:
    """The driver module, or a one-line error naming the install step (an optional extra)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise StoreError(
            f"reading this store needs the {module} package: "
            f"pip install 'sms-replies[{extra}]' (or: pip install -e '.[{extra}]')"
        ) from None


class PostgresReader(_BaseReader):
    backend: Backend = "postgresql"

    def __init__(self, url: StoreURL, *, timeout: float = DEFAULT_TIMEOUT, write: bool = False):
        super().__init__()
        psycopg = _driver("psycopg", "postgres")
        self._psycopg = psycopg
        self.url = url
        self.schema = url.schema
        conninfo = url.postgres_conninfo()
        conninfo.setdefault("connect_timeout", str(max(1, round(timeout))))
        conninfo.setdefault("application_name", "sms-replies-analytics")
        try:
            self._con = psycopg.connect(**cast(dict[str, Any], conninfo), autocommit=write)
            if not write:
                self._con.read_only = True
            with self._con.cursor() as cur:
                cur.execute(f"SET statement_timeout = {int(QUERY_TIMEOUT * 1000)}")
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(
                f"cannot reach PostgreSQL at {url}: {_pg_message(exc)}"
            ) from None
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL {url} refused the connection: {exc}") from None

    def _load_catalog(self) -> dict[str, frozenset[str]]:
        rows = self._execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %(schema)s",
            {"schema": self.schema},
        )
        catalog: dict[str, set[str]] = {}
        for name, col in rows:
            catalog.setdefault(str(name), set()).add(str(col))
        return {k: frozenset(v) for k, v in catalog.items()}

    def _execute(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        psycopg = self._psycopg
        try:
            with self._con.cursor() as cur:
                cur.execute(sql, params)
                self.rowcount = cur.rowcount
                return list(cur.fetchall()) if cur.description else []
        except psycopg.errors.LockNotAvailable as exc:
            raise StoreBusyError(f"PostgreSQL {self.url}: {exc}") from None
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(f"PostgreSQL {self.url}: {_pg_message(exc)}") from None
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL {self.url} failed: {exc}") from None

    def _run(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        return self._execute(sql, params)

    def _run_write(self, sql: str, params: Any) -> int:
        self._execute(sql, params)
        return int(self.rowcount)

    def close(self) -> None:
        self._con.close()


def _pg_message(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# -- ClickHouse -------------------------------------------------------------------------


class ClickHouseReader(_BaseReader):
    backend: Backend = "clickhouse"

    def __init__(self, url: StoreURL, *, timeout: float = DEFAULT_TIMEOUT, write: bool = False):
        super().__init__()
        client_class = _driver("clickhouse_driver", "clickhouse").Client

        self.url = url
        self.schema = url.database
        self._client = client_class(
            host=url.host or "127.0.0.1",
            port=url.port or 9000,
            user=url.user or "default",
            password=url.password.get_secret_value() if url.password else "",
            database="default",
            secure=url.secure,
            connect_timeout=timeout,
            send_receive_timeout=QUERY_TIMEOUT,
            sync_request_timeout=timeout,
            client_name="sms-replies-analytics",
        )

    def _load_catalog(self) -> dict[str, frozenset[str]]:
        rows = self._execute(
            "SELECT table, name, type FROM system.columns WHERE database = %(db)s",
            {"db": self.schema},
        )
        catalog: dict[str, set[str]] = {}
        for name, col, col_type in rows:
            catalog.setdefault(str(name), set()).add(str(col))
            if str(col) in _TIMESTAMPS and "DateTime64" in str(col_type):
                self.dialect = CLICKHOUSE_DATETIME64  # a current server's tables
        return {k: frozenset(v) for k, v in catalog.items()}

    def fetch(self, stmt: ClauseElement) -> list[tuple[Any, ...]]:
        """The rows of ``stmt``; ``replies`` read without FINAL when it has nothing to collapse.

        ``FINAL`` makes the server merge every part on the fly (on 18.16 in one
        thread: 2.6x at 1 M rows, docs/analytics.md, Scale). It changes nothing
        when each partition of ``replies`` is a single part that came out of a
        merge (level > 0): a ReplacingMergeTree merge keeps one row per key, and
        rows of one key never sit in two partitions unless two sinks raced on two
        different deliveries of one reply across a month's end (FINAL would
        collapse those; nothing else does). The parts are listed before and after
        the statement: parts are immutable and a new one gets a new name, so an
        unchanged list means the statement read exactly those parts; otherwise it
        runs again with FINAL.
        """
        self.columns("")  # the catalog (and so the timestamps' precision) first
        if isinstance(self.dialect, ClickHouseDialect) and _reads_table(stmt, TABLE):
            parts = self.replies_parts()
            if collapsed(parts):
                fast = self.dialect.reading_without_final(frozenset({TABLE}))
                sql, params = compile_statement(stmt, fast)
                rows = self._run(sql, params)
                if self.replies_parts() == parts:
                    return [tuple(_utc(v) for v in row) for row in rows]
                log.debug("clickhouse: parts of %s changed while reading; again with FINAL", TABLE)
        return super().fetch(stmt)

    def replies_parts(self) -> list[tuple[str, str, int]]:
        """(partition, name, merge level) of each active part of ``replies``, by name."""
        rows = self._execute(
            "SELECT partition, name, level FROM system.parts "
            "WHERE active AND database = %(db)s AND table = %(table)s ORDER BY name",
            {"db": self.schema, "table": TABLE},
        )
        return [(str(p), str(n), int(level)) for p, n, level in rows]

    def _execute(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        from clickhouse_driver import errors

        try:
            return cast(list[tuple[Any, ...]], self._client.execute(sql, params or None))
        except errors.ServerException as exc:
            message = str(exc).split("Stack trace", 1)[0].strip()
            raise StoreError(f"ClickHouse {self.url} failed: {message}") from None
        except (errors.Error, OSError, EOFError, TimeoutError) as exc:
            raise StoreUnavailableError(
                f"cannot reach ClickHouse at {self.url}: {type(exc).__name__}: {exc}"
            ) from None

    def _run(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        return self._execute(sql, params)

    def _run_write(self, sql: str, params: Any) -> int:
        self._execute(sql, params)
        return -1

    def insert(self, name: str, row: dict[str, Any]) -> None:
        # The native protocol sends rows as data, not in the statement's text.
        values = {}
        for key, value in row.items():
            if isinstance(value, datetime):  # the column's precision, rounded up like bounds
                self.columns("")
                bound = Instant().process_bind_param(value, self.dialect)
                if isinstance(bound, int):
                    value = datetime.fromtimestamp(bound, tz=UTC)
                else:
                    value = datetime.fromisoformat(bound).replace(tzinfo=UTC)
            values[key] = int(value) if isinstance(value, bool) else value
        from clickhouse_driver import errors

        try:
            self._client.execute(
                f"INSERT INTO `{self.schema}`.{name} ({', '.join(values)}) VALUES", [values]
            )
        except errors.ServerException as exc:
            message = str(exc).split("Stack trace", 1)[0].strip()
            raise StoreError(f"ClickHouse {self.url} failed: {message}") from None
        except (errors.Error, OSError, EOFError, TimeoutError) as exc:
            raise StoreUnavailableError(
                f"cannot reach ClickHouse at {self.url}: {type(exc).__name__}: {exc}"
            ) from None

    def close(self) -> None:
        self._client.disconnect()


def collapsed(parts: list[tuple[str, str, int]]) -> bool:
    """Whether these parts (:meth:`ClickHouseReader.replies_parts`) hold at most one row
    per key within each partition: one part per partition, each out of a merge (a part
    as inserted, level 0, keeps the duplicates of its insert)."""
    partitions = [p for p, _, _ in parts]
    return len(set(partitions)) == len(partitions) and all(level > 0 for _, _, level in parts)


def _reads_table(stmt: ClauseElement, name: str) -> bool:
    return any(
        isinstance(element, TableClause) and element.name == name
        for element in visitors.iterate(stmt)
    )


@contextmanager
def open_store(
    url: StoreURL, *, timeout: float = DEFAULT_TIMEOUT, write: bool = False
) -> Iterator[Reader]:
    """A reader of ``url``, closed on exit; keep it for one request or command only.

    ``write``: the connection may write (campaign declarations); DuckDB then
    creates the file.
    """
    reader: DuckDBReader | PostgresReader | ClickHouseReader
    if url.backend == "duckdb":
        reader = DuckDBReader(url, timeout=timeout, write=write)
    elif url.backend == "postgresql":
        reader = PostgresReader(url, timeout=timeout, write=write)
    else:
        reader = ClickHouseReader(url, timeout=timeout, write=write)
    try:
        yield reader
    finally:
        reader.close()
