"""The four questions the scale benchmark times, per store.

- ``summary``: ``sms-replies stats`` over the last 30 days (totals, top keywords);
- ``timeseries``: hour buckets over the same 30 days (zone Europe/Paris);
- ``campaigns``: every campaign's figures (``sms-replies campaign stats``);
- ``search``: the newest 100 replies of one sender (``/api/replies?sender=``), the
  busiest sender (the most rows to sort).

DuckDB runs the product's functions (:mod:`sms_replies.analytics.queries`,
:mod:`sms_replies.analytics.campaigns`) on a reader opened per call as the CLI
and the API do. PostgreSQL and ClickHouse run :data:`INTERIM` SQL: the same
statements the DuckDB functions send, written in each dialect, until the
product's readers for those stores land (then they are timed instead).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from clickhouse_driver import Client

from benchmarks.stores_synth import END, busiest_sender
from sms_replies.analytics import campaigns as product_campaigns
from sms_replies.analytics import queries as product
from sms_replies.analytics.params import StatsQuery
from sms_replies.analytics.store import CAMPAIGNS_TABLE, open_reader
from sms_replies.schema import COLUMN_NAMES, TABLE

Query = Callable[[], object]
NAMES = ("summary", "timeseries", "campaigns", "search")
TZ = "Europe/Paris"
START = END - timedelta(days=30)
INTERIM = True  # PostgreSQL and ClickHouse: hand-written until the product's readers land


def duckdb_queries(path: Path) -> dict[str, Query]:
    summary_q = StatsQuery(start=START, end=END, tz=TZ)
    series_q = StatsQuery(start=START, end=END, tz=TZ, bucket="hour")
    search = product.ReplyFilter(sender=busiest_sender(), limit=100)

    def summary() -> object:
        with open_reader(path) as con:
            return product.summary(con, summary_q)

    def timeseries() -> object:
        with open_reader(path) as con:
            return product.timeseries(con, series_q)

    def campaigns() -> object:
        with open_reader(path) as con:
            return product_campaigns.campaign_stats(con)

    def replies() -> object:
        with open_reader(path) as con:
            return product.list_replies(con, search)

    return {
        "summary": summary,
        "timeseries": timeseries,
        "campaigns": campaigns,
        "search": replies,
    }


# -- PostgreSQL (interim) -----------------------------------------------------------

_PG_STATS = (
    "count(r.reply_id), count(DISTINCT r.sender), "
    "count(DISTINCT r.sender) FILTER (WHERE r.is_stop), "
    "count(*) FILTER (WHERE r.is_stop), count(*) FILTER (WHERE r.parts_expected > 1), "
    "count(*) FILTER (WHERE NOT r.complete), "
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.last_part_at) "
    "- extract(epoch FROM r.received_at)) "
    "FILTER (WHERE r.parts_expected > 1 AND r.last_part_at IS NOT NULL)"
)
_PG_MEMBERSHIP = (
    "(r.campaign = c.name OR (r.campaign IS NULL AND r.received_at >= c.start_at "
    "AND r.received_at < c.end_at AND ((c.channel = 'long_number' AND r.channel = "
    "'long_number' AND r.recipient = c.recipient) OR (c.channel = 'short_number' "
    "AND r.channel = 'short_number'))))"
)


def postgres_queries(dsn: str, schema: str) -> dict[str, Query]:
    import asyncio

    replies = f'"{schema}".{TABLE}'
    window = f"FROM {replies} r WHERE r.received_at >= $1 AND r.received_at < $2"
    bucket = (
        "r.received_at - ((r.received_at AT TIME ZONE $3) "
        "- date_trunc('hour', r.received_at AT TIME ZONE $3))"
    )

    async def run(statements: list[tuple[str, tuple[Any, ...]]]) -> object:
        con = await asyncpg.connect(dsn)
        try:
            return [await con.fetch(sql, *args) for sql, args in statements]
        finally:
            await con.close()

    def summary() -> object:
        return asyncio.run(
            run(
                [
                    (f"SELECT {_PG_STATS} {window}", (START, END)),
                    (f"SELECT count(*) {window}", (START, END)),
                    (
                        f"SELECT r.keyword, count(*) AS n {window} AND r.keyword <> '' "
                        "GROUP BY r.keyword ORDER BY n DESC, r.keyword LIMIT $3",
                        (START, END, 10),
                    ),
                ]
            )
        )

    def timeseries() -> object:
        sql = (
            f"SELECT NULL AS k, {bucket} AS b, count(*), count(DISTINCT r.sender), "
            "count(*) FILTER (WHERE r.is_stop), count(*) FILTER (WHERE r.parts_expected > 1), "
            f"count(*) FILTER (WHERE NOT r.complete) {window} GROUP BY k, b ORDER BY k, b"
        )
        return asyncio.run(run([(sql, (START, END, TZ))]))

    def campaigns() -> object:
        sql = (
            f"SELECT c.name, c.channel, c.recipient, c.start_at, c.end_at, c.delivered, "
            f'c.created_at, {_PG_STATS} FROM "{schema}".{CAMPAIGNS_TABLE} c '
            f"LEFT JOIN {replies} r ON {_PG_MEMBERSHIP} "
            "GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY c.start_at DESC, c.name"
        )
        return asyncio.run(run([(sql, ())]))

    def search() -> object:
        sql = (
            f"SELECT {', '.join('r.' + c for c in COLUMN_NAMES)} FROM {replies} r "
            "WHERE r.sender = $1 ORDER BY r.received_at DESC, r.reply_id DESC LIMIT $2"
        )
        return asyncio.run(run([(sql, (busiest_sender(), 101))]))

    return {"summary": summary, "timeseries": timeseries, "campaigns": campaigns, "search": search}


# -- ClickHouse (interim) -----------------------------------------------------------

_CH_STATS = (
    "count(), uniqExact(r.sender), uniqExactIf(r.sender, r.is_stop), countIf(r.is_stop), "
    "countIf(r.parts_expected > 1), countIf(NOT r.complete), "
    "quantileExactIf(0.5)(toFloat64(r.last_part_at) - toFloat64(r.received_at), "
    "r.parts_expected > 1 AND r.last_part_at IS NOT NULL)"
)


def clickhouse_queries(client: Client, database: str, *, final: bool = True) -> dict[str, Query]:
    fin = " FINAL" if final else ""
    replies = f"`{database}`.{TABLE} AS r{fin}"
    params = {"start": int(START.timestamp()), "end": int(END.timestamp()), "tz": TZ}
    window = (
        f"FROM {replies} WHERE r.received_at >= toDateTime(%(start)s) "
        "AND r.received_at < toDateTime(%(end)s)"
    )

    def summary() -> object:
        return [
            client.execute(f"SELECT {_CH_STATS} {window}", params),
            client.execute(f"SELECT count() {window}", params),
            client.execute(
                f"SELECT r.keyword, count() AS n {window} AND r.keyword != '' "
                "GROUP BY r.keyword ORDER BY n DESC, r.keyword LIMIT 10",
                params,
            ),
        ]

    def timeseries() -> object:
        return client.execute(
            f"SELECT toStartOfHour(r.received_at, '{TZ}') AS b, count(), uniqExact(r.sender), "
            "countIf(r.is_stop), countIf(r.parts_expected > 1), countIf(NOT r.complete) "
            f"{window} GROUP BY b ORDER BY b",
            params,
        )

    def campaigns() -> object:
        # 18.16 joins only on equalities: the window rule is a filter after a cross
        # join of the (few) campaigns with the replies.
        return client.execute(
            f"SELECT c.name, any(c.delivered), {_CH_STATS} FROM {replies} "
            f"CROSS JOIN `{database}`.{CAMPAIGNS_TABLE} AS c WHERE {_CH_MEMBERSHIP} "
            "GROUP BY c.name ORDER BY c.name"
        )

    def search() -> object:
        return client.execute(
            f"SELECT {', '.join('r.' + c for c in COLUMN_NAMES)} FROM {replies} "
            "WHERE r.sender = %(sender)s ORDER BY r.received_at DESC, r.reply_id DESC LIMIT 101",
            {"sender": busiest_sender()},
        )

    return {"summary": summary, "timeseries": timeseries, "campaigns": campaigns, "search": search}


_CH_MEMBERSHIP = (
    "(r.campaign = c.name OR (isNull(r.campaign) AND r.received_at >= c.start_at "
    "AND r.received_at < c.end_at AND ((c.channel = 'long_number' AND r.channel = "
    "'long_number' AND r.recipient = c.recipient) OR (c.channel = 'short_number' "
    "AND r.channel = 'short_number'))))"
)
