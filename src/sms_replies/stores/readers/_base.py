"""The one interface every store's reader offers (:class:`Reader`), what the readers
share (:class:`_BaseReader`: compiling, typed columns, UTC times), and loading an
optional driver.
"""

from __future__ import annotations

import importlib
import logging
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from sqlalchemy import column, table
from sqlalchemy import insert as sa_insert
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.selectable import TableClause
from sqlalchemy.types import Integer, String, TypeDecorator, TypeEngine

from sms_replies.schema import COLUMNS, LogicalType
from sms_replies.stores.dialects import DIALECTS, Flag, Instant
from sms_replies.stores.errors import StoreError
from sms_replies.stores.url import Backend, StoreURL

# The readers' logger, named as before the module became a package.
log = logging.getLogger(__package__)

DEFAULT_TIMEOUT = 2.0  # seconds a reader or a campaign writer waits for the sink's lock

QUERY_TIMEOUT = 60.0  # seconds one statement may take through the sink's endpoint

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


def _driver(module: str, extra: str) -> Any:
    """The driver module, or a one-line error naming the install step (an optional extra)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise StoreError(
            f"reading this store needs the {module} package: "
            f"pip install 'sms-replies[{extra}]' (or: pip install -e '.[{extra}]')"
        ) from None
