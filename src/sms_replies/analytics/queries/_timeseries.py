"""The time series: counts per bucket in a zone, empty buckets as zeros."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from itertools import pairwise
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Select,
    distinct,
    false,
    func,
    literal_column,
    null,
    select,
    true,
    union_all,
)

from sms_replies.analytics.params import StatsQuery
from sms_replies.analytics.queries._aggregates import _grouped, _grouped_statement
from sms_replies.analytics.queries._buckets import (
    _bucket_expression,
    _bucket_time,
    bucket_starts,
    zone_offsets,
)
from sms_replies.analytics.queries._membership import _check_campaign, _range
from sms_replies.analytics.queries._records import Point, Series, Timeseries, share
from sms_replies.analytics.queries._view import StoreView
from sms_replies.stores.dialects import CountIf
from sms_replies.stores.readers import Reader


def _senders_per_bucket_clickhouse(
    view: StoreView, q: StatsQuery, bucket_of: Callable[[Any], ColumnElement[Any]]
) -> dict[tuple[Any, int], int]:
    """Distinct senders per (key, bucket) on ClickHouse, grouping by sender first: one
    row per (key, sender) with the set of its buckets (``groupUniqArray``), then
    ``arrayJoin`` and a count per (key, bucket). The same figures as
    ``count(DISTINCT sender)`` per bucket, which 18.16 computes with one hash set of
    senders per bucket: at 10 M rows 5.0 s of server CPU against 1.2 s this way
    (docs/analytics.md, Scale)."""

    def per_sender(src: Any) -> list[ColumnElement[Any]]:
        return [
            src.c.sender.label("g_sender"),
            func.groupUniqArray(bucket_of(src)).label("buckets"),
        ]

    if q.group_by is None:
        r = view.replies()
        inner: Select[Any] | None = (
            select(*per_sender(r)).where(*_range(view, q)).group_by(literal_column("g_sender"))
        )
    else:
        inner = _grouped_statement(view, q, per_sender)
    if inner is None:
        return {}
    s = inner.subquery("s")
    keyed = q.group_by is not None
    keys = [s.c.g_key] if keyed else []
    j = select(*keys, func.arrayJoin(s.c.buckets).label("g_b")).subquery("j")
    j_keys = [j.c.g_key] if keyed else []
    stmt = select(*j_keys, j.c.g_b, func.count()).group_by(*j_keys, j.c.g_b)
    out: dict[tuple[Any, int], int] = {}
    for row in view.reader.fetch(stmt):
        key, b, n = row if keyed else (None, *row)
        out[(key, int(b))] = int(n)
    return out


def timeseries(reader: Reader, q: StatsQuery) -> Timeseries:
    """Counts per bucket (``q.bucket``, default hour) in zone ``q.tz``, empty buckets as zeros."""
    view = StoreView(reader)
    _check_campaign(view, q.campaign)
    bucket = q.bucket or "hour"
    tz = q.zone
    by_key: dict[str | None, dict[datetime, Point]] = {}
    arithmetic = zone_offsets(tz, q.start, q.end) is not None
    if view.has_replies:
        r = view.replies()
        # ClickHouse counts the distinct senders in a statement of their own (sender first).
        separate_senders = reader.backend == "clickhouse"

        def bucket_of(src: Any) -> ColumnElement[Any]:
            return _bucket_expression(src.c.received_at, bucket, q)

        def counts(src: Any) -> list[ColumnElement[Any]]:
            senders = (
                literal_column("0") if separate_senders else func.count(distinct(src.c.sender))
            )
            return [
                bucket_of(src).label("g_bucket"),
                func.count(),
                senders,
                CountIf(src.c.is_stop == true()),
                CountIf(src.c.parts_expected > 1),
                CountIf(src.c.complete == false()),
            ]

        if q.group_by is None:
            pieces = []
            for lo, hi in _pieces(reader, q, bucket):
                piece = [] if lo is None else [r.c.received_at >= lo, r.c.received_at < hi]
                pieces.append(
                    select(null().label("g_key"), *counts(r))
                    .where(*_range(view, q), *piece)
                    .group_by(literal_column("g_bucket"))
                )
            rows = reader.fetch(pieces[0] if len(pieces) == 1 else union_all(*pieces))
        else:
            rows = _grouped(view, q, counts)
        if separate_senders and rows:
            per_bucket = _senders_per_bucket_clickhouse(view, q, bucket_of)
            rows = [(k, b, n, per_bucket.get((k, int(b)), 0), *rest) for k, b, n, _, *rest in rows]
        for k, b, n, senders, stops, multipart, incomplete in rows:
            t = _bucket_time(int(b), bucket, tz, arithmetic)
            by_key.setdefault(k, {})[t] = Point(
                t,
                int(n),
                int(senders),
                int(stops),
                int(multipart),
                int(incomplete),
                stop_share=share(int(stops), int(n)),
            )
    if not by_key and q.group_by is None:
        by_key[None] = {}
    buckets = bucket_starts(q.start, q.end, bucket, tz)
    known = set(buckets)
    extra = {t for points in by_key.values() for t in points if t not in known}
    buckets = sorted(known | extra)
    keys = sorted(by_key, key=lambda k: (k is None, k or ""))
    series = [
        Series(
            key=k,
            points=[
                dataclasses.replace(by_key[k].get(t) or Point(t), t=t.astimezone(tz))
                for t in buckets
            ],
        )
        for k in keys
    ]
    return Timeseries(
        start=q.start.astimezone(tz),
        end=q.end.astimezone(tz),
        tz=q.tz,
        bucket=bucket,
        group_by=q.group_by,
        buckets=[t.astimezone(tz) for t in buckets],
        series=series,
    )


#: DuckDB: hour buckets counted a day's worth at a time (see :func:`_pieces`).
PIECE_BUCKETS: Final = 24


def _pieces(
    reader: Reader, q: StatsQuery, bucket: str
) -> list[tuple[datetime | None, datetime | None]]:
    """[lo, hi) ranges of whole buckets covering q's range, to be counted apart and the
    rows put together (no bucket spans two). ``(None, None)``: one statement.

    DuckDB, hour buckets: the exact distinct senders per hour are a distinct of
    (hour, sender) pairs, nearly one per reply (7 M of 8.6 M at 10 M rows), and one
    hash table of them all costs more than one per day of them, branches of a UNION
    ALL each reading its own day (zone maps skip the rest): 10 M rows, 3.6 -> 2.3 s
    CPU (docs/analytics.md, Scale). The other stores keep one statement.
    """
    if reader.backend != "duckdb" or bucket != "hour":
        return [(None, None)]
    starts = bucket_starts(q.start, q.end, bucket, q.zone)[PIECE_BUCKETS::PIECE_BUCKETS]
    bounds = [q.start, *starts, q.end]
    # An empty range (since at or after until) has no piece: one statement, no rows.
    return [(lo, hi) for lo, hi in pairwise(bounds) if lo < hi] or [(None, None)]
