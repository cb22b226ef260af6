"""The DDL of every table in every store, generated from the column lists of ``schema.py``.

Pure: strings only, no connection. The backend modules run them
(``stores.duckdb.ensure_tables`` and the others).

Tables (:data:`TABLES`): ``replies`` (:data:`~sms_replies.schema.COLUMNS`,
key ``reply_id``), ``campaigns`` (:data:`~sms_replies.schema.CAMPAIGN_COLUMNS`,
key ``name``), ``optouts`` (:data:`~sms_replies.schema.OPTOUT_COLUMNS`, key
``sender``).

Per backend:

- DuckDB: :func:`duckdb_create`, :func:`duckdb_add_column`, :func:`duckdb_type`.
- PostgreSQL (tables in a schema): :func:`postgres_create`,
  :func:`postgres_add_column`, :func:`postgres_type`, :func:`quote_ident`.
- ClickHouse (tables in a database, types by server :class:`Features`):
  :func:`clickhouse_create`, :func:`clickhouse_add_column`,
  :func:`clickhouse_type`. Every table is a ``ReplacingMergeTree`` ordered by
  its key (``replies``: by sender, then its key, :data:`CLICKHOUSE_REPLIES_ORDER`):
  **readers use FINAL**. ``optouts`` has one more column there,
  ``version UInt64`` (:data:`CLICKHOUSE_OPTOUT_VERSION`, computed by
  :func:`sms_replies.optout.version`), the engine's version: the row with the
  greatest version is the one kept, which is the latest decision.
  ``campaigns`` keeps the latest ``created_at`` per name.

"Add missing columns" migrations: a table created by an older release lacks
columns added since; each backend module compares the table's columns with
the list and runs ``*_add_column`` for each missing one (nullable there: rows
already stored have no value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sms_replies.schema import (
    CAMPAIGN_COLUMNS,
    CAMPAIGNS_TABLE,
    COLUMNS,
    OPTOUT_COLUMNS,
    OPTOUTS_TABLE,
    TABLE,
    Column,
    LogicalType,
)


@dataclass(frozen=True, slots=True)
class Table:
    """A table: its columns, primary key and the CHECKs of the stores that enforce them."""

    name: str
    columns: tuple[Column, ...]
    key: str
    checks: tuple[str, ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


REPLIES = Table(TABLE, COLUMNS, "reply_id")
CAMPAIGNS = Table(
    CAMPAIGNS_TABLE,
    CAMPAIGN_COLUMNS,
    "name",
    (
        "channel IN ('long_number', 'short_number')",
        "delivered IS NULL OR delivered >= 0",
        "end_at > start_at",
        "(channel = 'long_number') = (recipient IS NOT NULL)",
    ),
)
OPTOUTS = Table(
    OPTOUTS_TABLE,
    OPTOUT_COLUMNS,
    "sender",
    (
        "status IN ('opted_out', 'opted_in')",
        "source IN ('provider', 'text', 'keyword')",
    ),
)
TABLES: tuple[Table, ...] = (REPLIES, CAMPAIGNS, OPTOUTS)

#: ClickHouse: the replies' sort key, which is also what ReplacingMergeTree deduplicates
#: by. ``sender`` first: one sender's replies (``/api/replies?sender=``) are then a few
#: granules, not a scan (1 M rows, FINAL: 7.6 s -> 0.04 s). Deduplication is unchanged:
#: a reply_id determines its sender (the sender is part of the id's hash). Tables
#: created before keep ``ORDER BY reply_id`` (18.16 cannot change a key in place).
CLICKHOUSE_REPLIES_ORDER = "(sender, reply_id)"

#: ClickHouse only: the optouts engine's version column (see :func:`sms_replies.optout.version`).
CLICKHOUSE_OPTOUT_VERSION = "version"


def _column_sql(column: Column, type_sql: str, key: str, *, nullable_suffix: bool) -> str:
    sql = f"{column.name} {type_sql}"
    if column.name == key:
        sql += " PRIMARY KEY"
    if nullable_suffix and not column.nullable:
        sql += " NOT NULL"
    return sql


# -- DuckDB ---------------------------------------------------------------------------

_DUCKDB_TYPES: dict[LogicalType, str] = {
    "text": "VARCHAR",
    "boolean": "BOOLEAN",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "timestamp": "TIMESTAMPTZ",
    "text[]": "VARCHAR[]",
}


def duckdb_type(column: Column) -> str:
    return _DUCKDB_TYPES[column.type]


def duckdb_create(table: Table) -> str:
    """``CREATE TABLE IF NOT EXISTS`` (in the connection's default schema)."""
    parts = [_column_sql(c, duckdb_type(c), table.key, nullable_suffix=True) for c in table.columns]
    parts += [f"CHECK ({check})" for check in table.checks]
    return f"CREATE TABLE IF NOT EXISTS {table.name} (\n  " + ",\n  ".join(parts) + "\n)"


def duckdb_add_column(table: Table, column: Column) -> str:
    return f"ALTER TABLE {table.name} ADD COLUMN IF NOT EXISTS {column.name} {duckdb_type(column)}"


# -- PostgreSQL -----------------------------------------------------------------------

_PG_TYPES: dict[LogicalType, str] = {
    "text": "text",
    "boolean": "boolean",
    "integer": "integer",
    "bigint": "bigint",
    "timestamp": "timestamptz",
    "text[]": "text[]",
}


def postgres_type(column: Column) -> str:
    return _PG_TYPES[column.type]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def postgres_table(table: Table | str, schema: str) -> str:
    """``"schema".table``."""
    name = table if isinstance(table, str) else table.name
    return f"{quote_ident(schema)}.{name}"


#: PostgreSQL secondary indexes (name, columns) per table. One sender's replies newest
#: first (``/api/replies?sender=``) is then an index range scan, not a scan of the
#: table: at 10 M rows 2.1 s -> under 1 ms (docs/analytics.md, "Scale").
POSTGRES_INDEXES: dict[str, tuple[tuple[str, str], ...]] = {
    TABLE: (("replies_sender_received_at", "sender, received_at"),),
}


def postgres_indexes(table: Table, schema: str) -> list[str]:
    """``CREATE INDEX IF NOT EXISTS`` of ``table``, run after its missing columns are added:
    also the migration of a table of an older release (built once, under a SHARE lock)."""
    return [
        f"CREATE INDEX IF NOT EXISTS {name} ON {postgres_table(table, schema)} ({columns})"
        for name, columns in POSTGRES_INDEXES.get(table.name, ())
    ]


def postgres_create(table: Table, schema: str) -> str:
    parts = [
        _column_sql(c, postgres_type(c), table.key, nullable_suffix=True) for c in table.columns
    ]
    parts += [f"CHECK ({check})" for check in table.checks]
    return (
        f"CREATE TABLE IF NOT EXISTS {postgres_table(table, schema)} (\n  "
        + ",\n  ".join(parts)
        + "\n)"
    )


def postgres_add_column(table: Table, schema: str, column: Column) -> str:
    return (
        f"ALTER TABLE {postgres_table(table, schema)} ADD COLUMN IF NOT EXISTS "
        f"{column.name} {postgres_type(column)}"
    )


# -- ClickHouse -----------------------------------------------------------------------

FEATURES_SQL = (
    "SELECT version(), "
    "(SELECT count() FROM system.data_type_families WHERE name = 'DateTime64'), "
    "(SELECT count() FROM system.settings WHERE name = 'insert_deduplication_token'), "
    "(SELECT count() FROM system.merge_tree_settings "
    "WHERE name = 'non_replicated_deduplication_window')"
)
DEDUPLICATION_WINDOW = 1000  # inserts remembered per table for the token


class _Executes(Protocol):
    def execute(self, query: str, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Features:
    """What a ClickHouse server can do, read from its system tables (:data:`FEATURES_SQL`).

    18.16 (Debian's package) lacks ``DateTime64`` (timestamps are then
    ``DateTime('UTC')``, whole seconds) and the insert deduplication token.
    """

    version: str
    datetime64: bool
    deduplication_token: bool
    non_replicated_deduplication: bool

    @classmethod
    def detect(cls, client: _Executes) -> Features:
        return cls.from_row(client.execute(FEATURES_SQL)[0])

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Features:
        version, datetime64, token, window = row
        return cls(str(version), bool(int(datetime64)), bool(int(token)), bool(int(window)))

    @property
    def token_dedup(self) -> bool:
        """Both halves are needed: the token is ignored without the table's window."""
        return self.deduplication_token and self.non_replicated_deduplication


def clickhouse_type(column: Column, features: Features) -> str:
    base = {
        "text": "String",
        "boolean": "UInt8",
        "integer": "Int32",
        "bigint": "Int64",
        "timestamp": "DateTime64(3, 'UTC')" if features.datetime64 else "DateTime('UTC')",
        "text[]": "Array(String)",
    }[column.type]
    return f"Nullable({base})" if column.nullable else base


def clickhouse_table(table: Table | str, database: str) -> str:
    """```database`.table`` (``database`` is a validated identifier)."""
    name = table if isinstance(table, str) else table.name
    return f"`{database}`.{name}"


def _clickhouse_engine(table: Table, features: Features) -> str:
    if table.name == REPLIES.name:
        settings = (
            f"\nSETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
            if features.token_dedup
            else ""
        )
        return (
            "ENGINE = ReplacingMergeTree()\n"
            "PARTITION BY toYYYYMM(received_at)\n"
            f"ORDER BY {CLICKHOUSE_REPLIES_ORDER}{settings}"
        )
    if table.name == OPTOUTS.name:
        return f"ENGINE = ReplacingMergeTree({CLICKHOUSE_OPTOUT_VERSION})\nORDER BY {table.key}"
    return f"ENGINE = ReplacingMergeTree(created_at)\nORDER BY {table.key}"


def clickhouse_columns(table: Table, features: Features) -> list[tuple[str, str]]:
    """(name, type) of each column, the optouts version included."""
    columns = [(c.name, clickhouse_type(c, features)) for c in table.columns]
    if table.name == OPTOUTS.name:
        columns.append((CLICKHOUSE_OPTOUT_VERSION, "UInt64"))
    return columns


def clickhouse_create(table: Table, database: str, features: Features) -> str:
    columns = ",\n  ".join(f"{name} {type_}" for name, type_ in clickhouse_columns(table, features))
    return (
        f"CREATE TABLE IF NOT EXISTS {clickhouse_table(table, database)} (\n  {columns}\n)\n"
        + _clickhouse_engine(table, features)
    )


def clickhouse_add_column(table: Table, database: str, column: Column, features: Features) -> str:
    # 18.16 has no ADD COLUMN IF NOT EXISTS; rows already stored get the type's default.
    return (
        f"ALTER TABLE {clickhouse_table(table, database)} "
        f"ADD COLUMN {column.name} {clickhouse_type(column, features)}"
    )


def clickhouse_columns_sql(table: Table, database: str) -> str:
    """The query for the names of ``table``'s columns (``database``: a validated identifier)."""
    return (
        f"SELECT name FROM system.columns WHERE database = '{database}' AND table = '{table.name}'"
    )
