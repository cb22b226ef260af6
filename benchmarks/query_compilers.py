"""How the candidate tools turn one analytics query into SQL for DuckDB, PostgreSQL and ClickHouse.

docs/analytics.md ("One query definition for three stores") records the figures.
SQLAlchemy is a dependency; sqlglot and ibis are measured only when installed
(``pip install sqlglot ibis-framework`` in a scratch venv). Prints, per tool and
dialect, the build + compile time of one query and the SQL it produced.

    python benchmarks/query_compilers.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

START = datetime.fromisoformat("2025-03-01T00:00+01:00")
END = datetime.fromisoformat("2025-03-31T00:00+02:00")

DUCKDB_SQL = (
    "SELECT count(r.reply_id), count(DISTINCT r.sender), "
    "count(DISTINCT r.sender) FILTER (WHERE r.is_stop), count(*) FILTER (WHERE r.is_stop), "
    "median(epoch(r.last_part_at) - epoch(r.received_at)) FILTER (WHERE r.parts_expected > 1), "
    "epoch_us(r.received_at - (timezone($tz, r.received_at) "
    "- date_trunc('hour', timezone($tz, r.received_at)))) AS b "
    "FROM replies r WHERE r.received_at >= $start AND r.received_at < $end GROUP BY b"
)


def timed(label: str, build: Callable[[], Any], n: int = 200) -> Any:
    result = build()
    t0 = time.perf_counter()
    for _ in range(n):
        build()
    print(f"{label}: {(time.perf_counter() - t0) / n * 1e3:.2f} ms per query")
    return result


def sqlalchemy_core() -> None:
    from sqlalchemy import bindparam, column, distinct, func, select, table, true
    from sqlalchemy.types import Integer, String

    from sms_replies.stores.dialects import (
        DIALECTS,
        BucketStart,
        CountDistinctIf,
        CountIf,
        Flag,
        Instant,
        Median,
        Seconds,
    )
    from sms_replies.stores.readers import compile_statement

    r = table(
        "replies",
        column("reply_id", String()),
        column("sender", String()),
        column("is_stop", Flag()),
        column("parts_expected", Integer()),
        column("last_part_at", Instant()),
        column("received_at", Instant()),
    ).alias("r")

    def stmt() -> Any:
        b = BucketStart(r.c.received_at, "hour", bindparam("tz", "Europe/Paris")).label("b")
        return (
            select(
                func.count(r.c.reply_id),
                func.count(distinct(r.c.sender)),
                CountDistinctIf(r.c.sender, r.c.is_stop == true()),
                CountIf(r.c.is_stop == true()),
                Median(Seconds(r.c.last_part_at, r.c.received_at), r.c.parts_expected > 1),
                b,
            )
            .where(r.c.received_at >= START, r.c.received_at < END)
            .group_by(b)
        )

    for name, dialect in DIALECTS.items():
        sql, params = timed(f"sqlalchemy {name}", lambda d=dialect: compile_statement(stmt(), d))
        print(sql.replace("\n", " "), params, "\n", sep="\n")


def sqlglot_transpile() -> None:
    try:
        import sqlglot
    except ImportError:
        print("sqlglot: not installed, skipped")
        return
    for name in ("postgres", "clickhouse"):
        sql = timed(
            f"sqlglot duckdb->{name}",
            lambda d=name: sqlglot.transpile(DUCKDB_SQL, read="duckdb", write=d)[0],
        )
        print(sql, "\n", sep="\n")


def ibis_compile() -> None:
    try:
        import ibis
    except ImportError:
        print("ibis: not installed, skipped")
        return
    t = ibis.table(
        {
            "reply_id": "string",
            "sender": "string",
            "is_stop": "boolean",
            "parts_expected": "int32",
            "received_at": "timestamp('UTC')",
            "last_part_at": "timestamp('UTC')",
        },
        name="replies",
    )
    start = ibis.param("timestamp('UTC')")

    def expr() -> Any:
        f = t.filter(t.received_at >= start)
        seconds = f.last_part_at.epoch_seconds() - f.received_at.epoch_seconds()
        return f.aggregate(
            replies=f.reply_id.count(),
            senders=f.sender.nunique(),
            stop_senders=f.sender.nunique(where=f.is_stop),
            stops=f.count(where=f.is_stop),
            median=seconds.median(where=f.parts_expected > 1),
        )

    for name in ("duckdb", "postgres", "clickhouse"):
        sql = timed(
            f"ibis {name}",
            lambda d=name: ibis.to_sql(expr(), dialect=d, params={start: START}),
            n=50,
        )
        print(sql, "\n", sep="\n")


if __name__ == "__main__":
    sqlalchemy_core()
    sqlglot_transpile()
    ibis_compile()
