"""The columns every figure is computed from (counts, distinct senders, the median),
their rows as :class:`Stats`, and the replies grouped by a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    distinct,
    false,
    func,
    literal_column,
    null,
    select,
    true,
)
from sqlalchemy.sql.selectable import TableClause

from sms_replies.analytics.params import StatsQuery
from sms_replies.analytics.queries._membership import Columns, _range, declared_part
from sms_replies.analytics.queries._records import Stats
from sms_replies.analytics.queries._view import LAST_PART_COLUMN, StoreView
from sms_replies.stores.dialects import CountDistinctIf, CountIf, Median, Seconds


def median_condition(r: TableClause) -> ColumnElement[bool]:
    """The replies whose assembly time counts (see the package docstring)."""
    return and_(r.c.parts_expected > 1, r.c.parts_received > 1, r.c[LAST_PART_COLUMN].is_not(None))


def aggregates(view: StoreView, r: TableClause) -> list[ColumnElement[Any]]:
    """The columns of :func:`row_stats`, in its order."""
    median: ColumnElement[Any] = null()
    if view.median_available:
        median = Median(Seconds(r.c[LAST_PART_COLUMN], r.c.received_at), median_condition(r))
    return [
        func.count(r.c.reply_id),
        func.count(distinct(r.c.sender)),
        CountDistinctIf(r.c.sender, r.c.is_stop == true()),
        CountIf(r.c.is_stop == true()),
        CountIf(r.c.parts_expected > 1),
        CountIf(r.c.complete == false()),
        median,
    ]


def row_stats(row: Sequence[Any]) -> Stats:
    replies, senders, stop_senders, stops, multipart, incomplete = (int(v or 0) for v in row[:6])
    median = row[6]
    return Stats.from_counts(
        replies,
        senders,
        stop_senders,
        stops,
        multipart,
        incomplete,
        median=None if median is None or replies == 0 else float(median),
    )


EMPTY_STATS: Final = Stats.from_counts(0, 0, 0, 0, 0, 0, None)


def _grouped(view: StoreView, q: StatsQuery, extra: Columns) -> list[tuple[Any, ...]]:
    """Rows (key, *extra(source)) of the replies of ``q`` grouped by ``q.group_by`` (and by
    the extra columns labelled ``g_*``): for campaigns, declared ones then undeclared
    names, two queries whose keys never meet."""
    stmt = _grouped_statement(view, q, extra)
    return [] if stmt is None else view.reader.fetch(stmt)


def _grouped_statement(view: StoreView, q: StatsQuery, extra: Columns) -> Select[Any] | None:
    """The statement of :func:`_grouped`; None when no reply can belong to a campaign."""
    r = view.replies()

    def labels(columns: Any) -> list[ColumnElement[Any]]:
        return [
            literal_column(str(col.key))
            for col in columns
            if str(getattr(col, "key", "")).startswith("g_")
        ]

    if q.group_by != "campaign":
        key = (r.c.recipient if q.group_by == "recipient" else r.c.channel).label("g_key")
        columns = extra(r)
        stmt = (
            select(key, *columns)
            .select_from(r)
            .where(*_range(view, q))
            .group_by(literal_column("g_key"), *labels(columns))
        )
        return stmt
    part = declared_part(view, q, extra)
    if part is None:
        return None
    grouping = labels(list(part.selected_columns))
    return part.group_by(literal_column("g_key"), *grouping)


def per_sender(src: Any) -> list[ColumnElement[Any]]:
    """One row per sender of ``src`` (group by its ``sender``): its counts, for
    :func:`sender_sums`."""
    return [
        src.c.sender,
        func.count().label("n"),
        CountIf(src.c.is_stop == true()).label("stops"),
        CountIf(src.c.parts_expected > 1).label("multipart"),
        CountIf(src.c.complete == false()).label("incomplete"),
    ]


def sender_sums(s: Any) -> list[ColumnElement[Any]]:
    """The first six columns of :func:`row_stats` from the rows of :func:`per_sender`:
    the senders are the non-null groups, the STOP senders those with a STOP (as
    ``count(DISTINCT sender)`` skips a null sender)."""
    return [
        func.sum(s.c.n),
        func.count(s.c.sender),
        CountIf(and_(s.c.sender.is_not(None), s.c.stops > 0)),
        func.sum(s.c.stops),
        func.sum(s.c.multipart),
        func.sum(s.c.incomplete),
    ]
