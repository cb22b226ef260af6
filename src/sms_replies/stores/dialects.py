"""One SQL definition, three stores: SQLAlchemy Core dialects and the few constructs that differ.

The analytics queries (:mod:`sms_replies.analytics.queries`) are written once
with SQLAlchemy Core and compiled per store, every value the caller gives a
bound parameter in the driver's own style:

- DuckDB: the PostgreSQL compiler, ``?`` parameters (:class:`DuckDBDialect`);
- PostgreSQL: SQLAlchemy's psycopg dialect, ``%(name)s`` (server-side ``$n``);
- ClickHouse: :class:`ClickHouseDialect`, ``%(name)s`` substituted by
  clickhouse-driver. Its compiler adds ``FINAL`` after every table (every table
  is a ReplacingMergeTree: readers collapse rows not yet merged; except the
  tables a reader found with nothing to collapse, ``without_final``), writes column
  names without table qualifiers (ClickHouse 18.16 resolves them poorly across
  joins: queries keep names unique instead), binds timestamps as ``toDateTime``
  of whole seconds (18.16 has no DateTime64; ``>=`` and ``<`` bounds rounded up
  are exact on whole-second rows; on a current server whose tables have
  DateTime64(3), :data:`CLICKHOUSE_DATETIME64`, as milliseconds) and booleans as
  0/1 (UInt8 columns).

The constructs whose SQL differs (everything else is portable SQL):

- :class:`CountIf`, :class:`CountDistinctIf`: ``count(...) FILTER (WHERE c)`` vs
  ``countIf`` / ``uniqExactIf``;
- :class:`Median`: the exact median, interpolated between the two middle values
  (DuckDB ``median``, PostgreSQL ``percentile_cont(0.5)``, ClickHouse the middle
  elements of ``arraySort(groupArrayIf(...))``: 18.16's quantiles are not exact);
- :class:`Seconds`: seconds between two timestamps, as a float;
- :class:`BucketStart`: start of the hour or day of a zone holding an instant, as
  whole seconds since the epoch, exact across DST changes (hours: the instant
  minus its wall-clock minutes and seconds; days: the local midnight);
- :class:`BinaryOrder`: ORDER BY in byte order (PostgreSQL's default collation
  sorts otherwise).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Boolean, DateTime, bindparam
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import default
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import compiler, elements, expression
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.selectable import TableClause
from sqlalchemy.types import Float, Integer, String, TypeDecorator

from sms_replies.schema import COLUMNS

#: Columns of ``replies`` that are never null (not Nullable in ClickHouse).
_NOT_NULL: Final = frozenset(c.name for c in COLUMNS if not c.nullable)


class Instant(TypeDecorator[datetime]):
    """A UTC instant (TIMESTAMPTZ / timestamptz / DateTime('UTC'))."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "clickhouse":
            return value
        # Rounded up to the column's precision, which keeps `>=` and `<` exact on its rows.
        value = value.astimezone(UTC)
        if not getattr(dialect, "datetime64", False):
            return math.ceil(value.timestamp())  # DateTime: whole seconds (18.16)
        whole = value.replace(microsecond=0)
        ms = math.ceil(value.microsecond / 1000)
        text = (whole + timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M:%S.%f")
        return text[:-3]  # DateTime64(3, 'UTC'): milliseconds, as UTC text


class Flag(TypeDecorator[bool]):
    """A boolean (UInt8 in ClickHouse)."""

    impl = Boolean
    cache_ok = True

    def process_bind_param(self, value: bool | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "clickhouse":
            return value
        return int(value)


# -- dialects -------------------------------------------------------------------------


class DuckDBDialect(PGDialect):
    """DuckDB speaks PostgreSQL's SQL closely enough; ``?`` parameters."""

    name = "duckdb"
    driver = "duckdb"
    default_paramstyle = "qmark"
    supports_statement_cache = True


class ClickHouseCompiler(compiler.SQLCompiler):
    # mypy: SQLAlchemy's visit_* methods are untyped, with more keywords than used here.

    def _final(self, table: Any) -> bool:
        return getattr(table, "name", None) not in getattr(self.dialect, "without_final", ())

    def visit_table(self, table: Any, asfrom: bool = False, **kw: Any) -> Any:  # type: ignore[override]
        text = super().visit_table(table, asfrom=asfrom, **kw)  # type: ignore[no-untyped-call]
        final = asfrom and not kw.get("iscrud") and kw.get("final_by_alias") is not table
        return f"{text} FINAL" if final and self._final(table) else text

    def visit_alias(self, alias: Any, asfrom: bool = False, **kw: Any) -> Any:  # type: ignore[override]
        kw["final_by_alias"] = alias.element  # the alias puts FINAL after its name
        text = super().visit_alias(alias, asfrom=asfrom, **kw)  # type: ignore[no-untyped-call]
        if asfrom and isinstance(alias.element, TableClause) and self._final(alias.element):
            text += " FINAL"  # FROM db.table AS r FINAL
        return text

    def visit_column(self, column: Any, include_table: bool = True, **kw: Any) -> str:  # type: ignore[override]
        return super().visit_column(column, include_table=False, **kw)

    def visit_bindparam(self, bindparam: Any, **kw: Any) -> Any:  # type: ignore[override]
        text = super().visit_bindparam(bindparam, **kw)  # type: ignore[no-untyped-call]
        if isinstance(bindparam.type, Instant):
            if getattr(self.dialect, "datetime64", False):
                return f"toDateTime64({text}, 3, 'UTC')"
            return f"toDateTime({text})"
        return text

    def visit_count_func(self, fn: Any, **kw: Any) -> str:
        # count(column) of a column that is never null is count(): 18.16 reads the
        # column for it otherwise, and reply_id's 32 hex digits (330 MB at 10 M rows)
        # cost as much as the rest of the summary.
        (argument,) = fn.clauses.clauses or (None,)
        if isinstance(argument, ColumnClause) and argument.name in _NOT_NULL:
            return "count()"
        return f"count{self.function_argspec(fn, **kw)}"

    def visit_true(self, expr: Any, **kw: Any) -> str:
        return "1"

    def visit_false(self, expr: Any, **kw: Any) -> str:
        return "0"


class ClickHouseDialect(default.DefaultDialect):
    """``datetime64``: the tables' timestamps are DateTime64(3) (a current server), not
    DateTime (18.16): timestamps are then bound in milliseconds. ``without_final``:
    tables read without ``FINAL``, for a reader that knows they hold nothing to
    collapse (:meth:`~sms_replies.stores.readers.ClickHouseReader.fetch`)."""

    name = "clickhouse"
    driver = "clickhouse_driver"
    default_paramstyle = "pyformat"
    statement_compiler = ClickHouseCompiler
    supports_native_boolean = False
    supports_statement_cache = True

    def __init__(
        self,
        *,
        datetime64: bool = False,
        without_final: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.datetime64 = datetime64
        self.without_final = without_final

    def reading_without_final(self, tables: frozenset[str]) -> ClickHouseDialect:
        """The same dialect, ``tables`` read without ``FINAL``."""
        return ClickHouseDialect(
            datetime64=self.datetime64, without_final=tables, paramstyle=self.paramstyle
        )


#: ClickHouse with DateTime64(3) timestamps (21.x and later servers).
CLICKHOUSE_DATETIME64: Final = ClickHouseDialect(datetime64=True, paramstyle="pyformat")


DIALECTS: Final[dict[str, Dialect]] = {
    "duckdb": DuckDBDialect(paramstyle="qmark"),  # type: ignore[no-untyped-call]
    "postgresql": PGDialect_psycopg(),  # type: ignore[no-untyped-call]
    "clickhouse": ClickHouseDialect(paramstyle="pyformat"),
}


# -- constructs -----------------------------------------------------------------------


class CountIf(expression.ColumnElement[int]):
    """Rows where ``condition`` holds."""

    inherit_cache = True
    type = Integer()

    def __init__(self, condition: Any) -> None:
        self.condition = elements.coercions.expect(elements.roles.WhereHavingRole, condition)  # type: ignore[attr-defined]


class CountDistinctIf(expression.ColumnElement[int]):
    """Distinct values of ``value`` among the rows where ``condition`` holds."""

    inherit_cache = True
    type = Integer()

    def __init__(self, value: Any, condition: Any) -> None:
        self.value = value
        self.condition = elements.coercions.expect(elements.roles.WhereHavingRole, condition)  # type: ignore[attr-defined]


class Median(expression.ColumnElement[float]):
    """Exact median (mean of the two middle values) of ``value`` where ``condition`` holds."""

    inherit_cache = True
    type = Float()

    def __init__(self, value: Any, condition: Any) -> None:
        self.value = value
        self.condition = elements.coercions.expect(elements.roles.WhereHavingRole, condition)  # type: ignore[attr-defined]


class Seconds(expression.ColumnElement[float]):
    """``end - start`` in seconds (a float)."""

    inherit_cache = True
    type = Float()

    def __init__(self, end: Any, start: Any) -> None:
        self.end = end
        self.start = start


class BucketStart(expression.ColumnElement[int]):
    """Start of the ``bucket`` ('hour'/'day') of zone ``tz`` (a bound name) holding ``value``,
    in whole seconds since the epoch."""

    inherit_cache = True
    type = Integer()

    def __init__(self, value: Any, bucket: str, tz: Any) -> None:
        if bucket not in ("hour", "day"):
            raise ValueError(bucket)
        self.value = value
        self.bucket = bucket
        self.tz = tz


class EpochSeconds(expression.ColumnElement[int]):
    """Whole seconds since the epoch of a timestamp (rounded down), an integer."""

    inherit_cache = True
    type = Integer()

    def __init__(self, value: Any) -> None:
        self.value = value


class NamedKey(expression.ColumnElement[str]):
    """A string value (bound) as a typed column: ``CAST(? AS VARCHAR)``, ``toString(…)``."""

    inherit_cache = True
    type = String()

    def __init__(self, value: str) -> None:
        self.value = bindparam(None, value, type_=String())


class BinaryOrder(expression.ColumnElement[str]):
    """``value`` compared byte by byte when sorted."""

    inherit_cache = True

    def __init__(self, value: Any) -> None:
        self.value = value
        self.type = value.type


def _c(compiler: compiler.SQLCompiler, element: Any, **kw: Any) -> str:
    return str(compiler.process(element, **kw))


# CountIf


@compiles(CountIf)
def _count_if(element: CountIf, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    return f"count(*) FILTER (WHERE {_c(compiler, element.condition, **kw)})"


@compiles(CountIf, "clickhouse")
def _count_if_ch(element: CountIf, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    return f"countIf({_c(compiler, element.condition, **kw)})"


@compiles(CountDistinctIf)
def _count_distinct_if(element: CountDistinctIf, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    value, condition = _c(compiler, element.value, **kw), _c(compiler, element.condition, **kw)
    return f"count(DISTINCT {value}) FILTER (WHERE {condition})"


@compiles(CountDistinctIf, "clickhouse")
def _count_distinct_if_ch(
    element: CountDistinctIf, compiler: compiler.SQLCompiler, **kw: Any
) -> str:
    value, condition = _c(compiler, element.value, **kw), _c(compiler, element.condition, **kw)
    return f"uniqExactIf({value}, {condition})"


# Median


@compiles(Median, "duckdb")
def _median_duckdb(element: Median, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    value, condition = _c(compiler, element.value, **kw), _c(compiler, element.condition, **kw)
    return f"median({value}) FILTER (WHERE {condition})"


@compiles(Median, "postgresql")
def _median_pg(element: Median, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    value, condition = _c(compiler, element.value, **kw), _c(compiler, element.condition, **kw)
    return f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {value}) FILTER (WHERE {condition})"


@compiles(Median, "clickhouse")
def _median_ch(element: Median, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    value, condition = _c(compiler, element.value, **kw), _c(compiler, element.condition, **kw)
    a = f"arraySort(groupArrayIf(toFloat64({value}), {condition}))"
    return (
        f"if(length({a}) = 0, NULL, "
        f"({a}[intDiv(length({a}) + 1, 2)] + {a}[intDiv(length({a}), 2) + 1]) / 2)"
    )


# Seconds


@compiles(Seconds, "duckdb")
def _seconds_duckdb(element: Seconds, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    end, start = _c(compiler, element.end, **kw), _c(compiler, element.start, **kw)
    return f"(epoch({end}) - epoch({start}))"


@compiles(Seconds, "postgresql")
def _seconds_pg(element: Seconds, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    end, start = _c(compiler, element.end, **kw), _c(compiler, element.start, **kw)
    return f"CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS DOUBLE PRECISION)"


@compiles(Seconds, "clickhouse")
def _seconds_ch(element: Seconds, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    end, start = _c(compiler, element.end, **kw), _c(compiler, element.start, **kw)
    return f"(toFloat64({end}) - toFloat64({start}))"


# BucketStart


@compiles(BucketStart, "duckdb")
def _bucket_duckdb(element: BucketStart, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    v, tz = _c(compiler, element.value, **kw), _c(compiler, element.tz, **kw)
    if element.bucket == "hour":
        start = f"{v} - (timezone({tz}, {v}) - date_trunc('hour', timezone({tz}, {v})))"
    else:
        start = f"timezone({tz}, date_trunc('day', timezone({tz}, {v})))"
    return f"(epoch_us({start}) // 1000000)"


@compiles(BucketStart, "postgresql")
def _bucket_pg(element: BucketStart, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    v, tz = _c(compiler, element.value, **kw), _c(compiler, element.tz, **kw)
    local = f"({v} AT TIME ZONE {tz})"
    if element.bucket == "hour":
        start = f"{v} - ({local} - date_trunc('hour', {local}))"
    else:
        start = f"date_trunc('day', {local}) AT TIME ZONE {tz}"
    return f"CAST(floor(EXTRACT(EPOCH FROM ({start}))) AS BIGINT)"


@compiles(BucketStart, "clickhouse")
def _bucket_ch(element: BucketStart, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    v, tz = _c(compiler, element.value, **kw), _c(compiler, element.tz, **kw)
    if element.bucket == "hour":
        return (
            f"(toInt64(toUnixTimestamp({v})) - toInt64(toMinute({v}, {tz})) * 60 "
            f"- toInt64(toSecond({v}, {tz})))"
        )
    return f"toInt64(toUnixTimestamp(toStartOfDay({v}, {tz})))"


# EpochSeconds


@compiles(EpochSeconds, "duckdb")
def _epoch_duckdb(element: EpochSeconds, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    return f"(epoch_us({_c(compiler, element.value, **kw)}) // 1000000)"


@compiles(EpochSeconds, "postgresql")
def _epoch_pg(element: EpochSeconds, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    return f"CAST(floor(EXTRACT(EPOCH FROM {_c(compiler, element.value, **kw)})) AS BIGINT)"


@compiles(EpochSeconds, "clickhouse")
def _epoch_ch(element: EpochSeconds, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    return f"toInt64(toUnixTimestamp({_c(compiler, element.value, **kw)}))"


# NamedKey


@compiles(NamedKey)
def _named_key(element: NamedKey, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    return f"CAST({_c(compiler, element.value, **kw)} AS VARCHAR)"


@compiles(NamedKey, "clickhouse")
def _named_key_ch(element: NamedKey, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    return f"toString({_c(compiler, element.value, **kw)})"


# BinaryOrder


@compiles(BinaryOrder)
def _binary(element: BinaryOrder, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    return _c(compiler, element.value, **kw)


@compiles(BinaryOrder, "postgresql")
def _binary_pg(element: BinaryOrder, compiler: compiler.SQLCompiler, **kw: Any) -> str:
    return f'({_c(compiler, element.value, **kw)}) COLLATE "C"'
