"""The summary: totals over a range, optionally by group, and the top keywords."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, literal_column, select

from sms_replies.analytics.params import StatsQuery
from sms_replies.analytics.queries._aggregates import (
    EMPTY_STATS,
    _grouped,
    aggregates,
    median_condition,
    per_sender,
    row_stats,
    sender_sums,
)
from sms_replies.analytics.queries._membership import _check_campaign, _range
from sms_replies.analytics.queries._records import Group, KeywordCount, Stats, Summary, share
from sms_replies.analytics.queries._view import LAST_PART_COLUMN, StoreView
from sms_replies.stores.dialects import BinaryOrder, Median, Seconds
from sms_replies.stores.readers import Reader


def _group_order(groups: list[Group]) -> list[Group]:
    """Most replies first, then by key (byte order), the null key last."""
    return sorted(groups, key=lambda g: (-g.stats.replies, g.key is None, g.key or ""))


def _totals(view: StoreView, q: StatsQuery) -> Stats:
    """The figures of every reply of ``q``, grouping by sender first.

    Same figures as ``select(*aggregates(view, r))``, in a shape every store runs
    faster: one row per sender with its counts, then sums over those rows; the
    senders are the non-null groups, the STOP senders those with a STOP (as
    ``count(DISTINCT sender)`` skips a null sender). Two exact distinct counts over
    10 M rows cost 5.7x more (docs/analytics.md, Scale). The median needs the rows
    themselves: its own statement, run only where the column exists, over the
    replies it counts only (its condition in WHERE, not FILTER: the scan skips the
    others: 10 M rows, DuckDB, 0.36 -> 0.16 s CPU).

    ClickHouse keeps the one-pass shape: each statement reads the table with
    ``FINAL``, which 18.16 does slowly, and ``uniqExact`` is cheap there (1 M rows:
    0.77 s one pass, 0.98 s grouped plus the median's statement).
    """
    r = view.replies()
    where = _range(view, q)
    if view.reader.backend == "clickhouse":
        (one_pass,) = view.reader.fetch(select(*aggregates(view, r)).where(*where))
        return row_stats(one_pass)
    s = select(*per_sender(r)).where(*where).group_by(r.c.sender).subquery("s")
    (row,) = view.reader.fetch(select(*sender_sums(s)))
    median: Any = None
    if view.median_available and row[0]:
        value = Median(Seconds(r.c[LAST_PART_COLUMN], r.c.received_at), median_condition(r))
        ((median,),) = view.reader.fetch(select(value).where(*where, median_condition(r)))
    return row_stats((*row, median))


def summary(reader: Reader, q: StatsQuery) -> Summary:
    """Totals over [start, end), optionally split by ``q.group_by``, and the top keywords.

    Totals count each reply once; with ``group_by='campaign'`` the groups hold only
    the replies that belong to a campaign (a reply in two overlapping campaigns
    counts in both), so they need not add up to the totals.
    """
    view = StoreView(reader)
    _check_campaign(view, q.campaign)
    totals = EMPTY_STATS
    groups: list[Group] = []
    keywords: list[KeywordCount] = []
    if view.has_replies:
        totals = _totals(view, q)
        if q.group_by is not None:
            rows = _grouped(view, q, lambda src: aggregates(view, src))
            declared = {c.name: c.delivered for c in view.declared()}
            for row in rows:
                stats = row_stats(row[1:8])
                count = declared.get(row[0]) if q.group_by == "campaign" else None
                groups.append(
                    Group(
                        key=row[0],
                        stats=stats,
                        delivered=count,
                        reply_rate=share(stats.senders, count) if count else None,
                        opt_out_rate=share(stats.stop_senders, count) if count else None,
                    )
                )
        keywords = _top_keywords(view, q, totals.replies)
    return Summary(
        start=q.start.astimezone(q.zone),
        end=q.end.astimezone(q.zone),
        tz=q.tz,
        group_by=q.group_by,
        campaign=q.campaign,
        totals=totals,
        groups=_group_order(groups),
        keywords=keywords,
        median_assembly_available=view.median_available or not view.has_replies,
    )


def _top_keywords(view: StoreView, q: StatsQuery, total: int) -> list[KeywordCount]:
    r = view.replies()
    n = func.count().label("n")
    stmt = (
        select(r.c.keyword, n)
        .where(*_range(view, q), r.c.keyword != "")
        .group_by(r.c.keyword)
        .order_by(literal_column("n").desc(), BinaryOrder(r.c.keyword))
        .limit(bindparam("top", q.top))
    )
    return [
        KeywordCount(keyword=str(k), replies=int(c), share=share(int(c), total))
        for k, c in view.reader.fetch(stmt)
    ]


def top_keywords(reader: Reader, q: StatsQuery) -> list[KeywordCount]:
    """The ``q.top`` most frequent non-empty keywords (ties: byte order)."""
    view = StoreView(reader)
    _check_campaign(view, q.campaign)
    if not view.has_replies:
        return []
    r = view.replies()
    (row,) = reader.fetch(select(func.count()).select_from(r).where(*_range(view, q)))
    return _top_keywords(view, q, int(row[0]))
