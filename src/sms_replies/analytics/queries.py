"""Statistics over the ``replies`` table: pure functions of a (read-only) DuckDB connection.

Definitions (``docs/analytics.md`` explains them for analysts):

- ``replies``: rows whose ``received_at`` is in [start, end).
- ``senders``: distinct ``sender`` numbers among them; ``stop_senders``: distinct
  senders of at least one STOP.
- ``stops`` / ``stop_share``: replies with ``is_stop``, and their share of replies.
- ``multipart`` / ``multipart_share``: replies announced as long SMS (``parts_expected > 1``).
- ``incomplete`` / ``incomplete_share``: replies with ``complete = false`` (a part
  never arrived before expiry), as a share of *all* replies.
- ``median_assembly_seconds``: median of (``last_part_at`` - ``received_at``), in
  seconds, over long replies (``parts_expected > 1``, complete or not); single
  messages (where the two times are equal) do not count. Null when the range holds
  no long reply, and when the table predates the ``last_part_at`` column (a store
  written by an older version that no sink has migrated yet:
  ``median_assembly_available`` is then false).
- Top keywords: the most frequent non-empty ``keyword`` values, with counts and
  their share of all replies.

Shares are null when there is no reply. Every value that comes from the caller
travels as a bound parameter; the few SQL fragments that vary (grouping key,
bucket expression) are picked from fixed mappings.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import duckdb

from sms_replies.analytics.params import (
    DEFAULT_TZ,
    InvalidQueryError,
    StatsQuery,
    UnknownCampaignError,
    local_midnight,
)
from sms_replies.analytics.store import CAMPAIGNS_TABLE, has_column, table_columns
from sms_replies.schema import COLUMN_NAMES, TABLE

LAST_PART_COLUMN: Final = "last_part_at"
MAX_PAGE: Final = 1000
# A position in the newest-first order (the API's OpenAPI document states this pattern).
CURSOR_PATTERN: Final = r"^(?:0|[1-9][0-9]{0,17})\.[^\x00-\x1f\x7f]*$"
_CURSOR: Final = re.compile(CURSOR_PATTERN)

CAMPAIGN_COLUMN: Final = "campaign"

# Whether reply r belongs to campaign c by the time-window rule.
WINDOW_MEMBERSHIP: Final = (
    "r.received_at >= c.start_at AND r.received_at < c.end_at AND ("
    "(c.channel = 'long_number' AND r.channel = 'long_number' AND r.recipient = c.recipient) "
    "OR (c.channel = 'short_number' AND r.channel = 'short_number'))"
)
# A reply that came through a per-campaign callback URL (``campaign`` set) belongs
# to the campaign of that name only, whatever its time; the others by the window.
MEMBERSHIP: Final = (
    f"(r.{CAMPAIGN_COLUMN} = c.name OR (r.{CAMPAIGN_COLUMN} IS NULL AND {WINDOW_MEMBERSHIP}))"
)


def membership_sql(con: duckdb.DuckDBPyConnection) -> str:
    """Whether reply r belongs to campaign c (the window rule on a table not yet migrated)."""
    return MEMBERSHIP if has_column(con, TABLE, CAMPAIGN_COLUMN) else WINDOW_MEMBERSHIP


_GROUP_KEYS: Final[dict[str, str]] = {
    "recipient": "r.recipient",
    "channel": "r.channel",
    "campaign": "c.name",
}

# Start of the bucket holding r.received_at, as an instant. Hours: step back by the
# wall-clock minutes/seconds (exact across DST changes, which fall on whole hours).
# Days: local midnight of the local date.
_BUCKET_EXPRS: Final[dict[str, str]] = {
    "hour": "r.received_at - (timezone($tz, r.received_at) "
    "- date_trunc('hour', timezone($tz, r.received_at)))",
    "day": "timezone($tz, date_trunc('day', timezone($tz, r.received_at)))",
}

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Stats:
    replies: int
    senders: int
    stop_senders: int
    stops: int
    stop_share: float | None
    multipart: int
    multipart_share: float | None
    incomplete: int
    incomplete_share: float | None
    median_assembly_seconds: float | None

    @classmethod
    def from_counts(
        cls,
        replies: int,
        senders: int,
        stop_senders: int,
        stops: int,
        multipart: int,
        incomplete: int,
        median: float | None,
    ) -> Stats:
        return cls(
            replies=replies,
            senders=senders,
            stop_senders=stop_senders,
            stops=stops,
            stop_share=share(stops, replies),
            multipart=multipart,
            multipart_share=share(multipart, replies),
            incomplete=incomplete,
            incomplete_share=share(incomplete, replies),
            median_assembly_seconds=None if median is None else float(median),
        )


@dataclass(frozen=True, slots=True)
class Group:
    """Figures of one group; the rates are set for campaigns whose delivered count is known."""

    key: str | None
    stats: Stats
    delivered: int | None = None
    reply_rate: float | None = None
    opt_out_rate: float | None = None


@dataclass(frozen=True, slots=True)
class KeywordCount:
    keyword: str
    replies: int
    share: float | None


@dataclass(frozen=True, slots=True)
class Summary:
    start: datetime
    end: datetime
    tz: str
    group_by: str | None
    campaign: str | None
    totals: Stats
    groups: list[Group]
    keywords: list[KeywordCount]
    median_assembly_available: bool


@dataclass(frozen=True, slots=True)
class Point:
    t: datetime
    replies: int = 0
    senders: int = 0
    stops: int = 0
    multipart: int = 0
    incomplete: int = 0
    stop_share: float | None = None


@dataclass(frozen=True, slots=True)
class Series:
    key: str | None
    points: list[Point]


@dataclass(frozen=True, slots=True)
class Timeseries:
    start: datetime
    end: datetime
    tz: str
    bucket: str
    group_by: str | None
    buckets: list[datetime]
    series: list[Series]


@dataclass(frozen=True, slots=True)
class ReplyFilter:
    """Filters of :func:`list_replies`; every one optional. Newest first."""

    start: datetime | None = None
    end: datetime | None = None
    tz: str = DEFAULT_TZ
    sender: str | None = None
    recipient: str | None = None
    keyword: str | None = None
    is_stop: bool | None = None
    complete: bool | None = None
    limit: int = 100
    offset: int | None = None
    cursor: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidQueryError("limit", f"between 1 and {MAX_PAGE}")
        if self.offset is not None and self.offset < 0:
            raise InvalidQueryError("offset", "must be >= 0")
        if self.start and self.end and self.start > self.end:
            raise InvalidQueryError("since", "must be before until")
        if self.cursor is not None:
            decode_cursor(self.cursor)


@dataclass(frozen=True, slots=True)
class ReplyPage:
    items: list[dict[str, Any]]
    limit: int
    offset: int | None
    next_cursor: str | None
    has_more: bool = False
    columns: list[str] = field(default_factory=list)


def share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def to_plain(value: Any) -> Any:
    """A dataclass result as JSON-ready dicts and lists (datetimes stay datetimes).

    A time whose zone offset is not whole minutes (local mean time, before a zone
    adopted standard time: Paris until 1911) is shown in UTC: RFC 3339 offsets
    have no seconds (and orjson would print -09:59:36 as -09:60).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is not None and offset.total_seconds() % 60:
            return value.astimezone(UTC)
    return value


# -- building blocks ---------------------------------------------------------------


def stats_sql(con: duckdb.DuckDBPyConnection) -> str:
    if has_column(con, TABLE, LAST_PART_COLUMN):
        median = (
            f"median(epoch(r.{LAST_PART_COLUMN}) - epoch(r.received_at)) "
            f"FILTER (WHERE r.parts_expected > 1 AND r.{LAST_PART_COLUMN} IS NOT NULL)"
        )
    else:
        median = "CAST(NULL AS DOUBLE)"
    return (
        "count(r.reply_id), count(DISTINCT r.sender), "
        "count(DISTINCT r.sender) FILTER (WHERE r.is_stop), "
        "count(*) FILTER (WHERE r.is_stop), "
        "count(*) FILTER (WHERE r.parts_expected > 1), "
        "count(*) FILTER (WHERE NOT r.complete), "
        f"{median}"
    )


def _check_campaign(con: duckdb.DuckDBPyConnection, name: str | None) -> None:
    """UnknownCampaignError unless ``name`` is declared or carried by a reply (its URL's)."""
    if name is None:
        return
    sql = f"SELECT count(*) FROM {CAMPAIGNS_TABLE} WHERE name = $name"
    if has_column(con, TABLE, CAMPAIGN_COLUMN):
        sql = f"SELECT ({sql}) + (SELECT count(*) FROM {TABLE} WHERE {CAMPAIGN_COLUMN} = $name)"
    found = con.execute(sql, {"name": name}).fetchone()
    if not found or not found[0]:
        raise UnknownCampaignError(name)


def _group_key(con: duckdb.DuckDBPyConnection, group_by: str) -> str:
    # A campaign named only by its replies' URL (not declared) is a group too.
    if group_by == "campaign" and has_column(con, TABLE, CAMPAIGN_COLUMN):
        return f"coalesce(c.name, r.{CAMPAIGN_COLUMN})"
    return _GROUP_KEYS[group_by]


def _source(
    con: duckdb.DuckDBPyConnection, q: StatsQuery, *, join_campaigns: bool
) -> tuple[str, dict[str, Any]]:
    """FROM ... WHERE ... for the replies of ``q`` (joined to their campaigns if asked)."""
    membership = membership_sql(con)
    attributed = has_column(con, TABLE, CAMPAIGN_COLUMN)
    params: dict[str, Any] = {"start": q.start, "end": q.end}
    where = ["r.received_at >= $start", "r.received_at < $end"]
    if join_campaigns and attributed:
        # Declared campaigns, and the undeclared names replies carry from their URL.
        sql = f"FROM {TABLE} r LEFT JOIN {CAMPAIGNS_TABLE} c ON {membership}"
        where.append(f"(c.name IS NOT NULL OR r.{CAMPAIGN_COLUMN} IS NOT NULL)")
        if q.campaign is not None:
            where.append(f"coalesce(c.name, r.{CAMPAIGN_COLUMN}) = $campaign")
            params["campaign"] = q.campaign
    elif join_campaigns:
        sql = f"FROM {TABLE} r JOIN {CAMPAIGNS_TABLE} c ON {membership}"
        if q.campaign is not None:
            where.append("c.name = $campaign")
            params["campaign"] = q.campaign
    else:
        sql = f"FROM {TABLE} r"
        if q.campaign is not None:
            declared = (
                f"EXISTS (SELECT 1 FROM {CAMPAIGNS_TABLE} c WHERE c.name = $campaign "
                f"AND {membership})"
            )
            where.append(
                f"(r.{CAMPAIGN_COLUMN} = $campaign OR {declared})" if attributed else declared
            )
            params["campaign"] = q.campaign
    return f"{sql} WHERE {' AND '.join(where)}", params


def row_stats(row: tuple[Any, ...]) -> Stats:
    replies, senders, stop_senders, stops, multipart, incomplete = (int(v) for v in row[:6])
    return Stats.from_counts(
        replies, senders, stop_senders, stops, multipart, incomplete, median=row[6]
    )


def _from_epoch_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def bucket_start(t: datetime, bucket: str, tz: ZoneInfo) -> datetime:
    """Start (a UTC instant) of the bucket of zone ``tz`` holding ``t``; same rule as the SQL.

    Arithmetic stays in UTC: Python adds wall-clock time to datetimes of one zone.
    """
    t = t.astimezone(UTC)
    local = t.astimezone(tz)
    if bucket == "hour":
        return t - timedelta(
            minutes=local.minute, seconds=local.second, microseconds=local.microsecond
        )
    return local_midnight(local.date(), tz).astimezone(UTC)


def bucket_starts(start: datetime, end: datetime, bucket: str, tz: ZoneInfo) -> list[datetime]:
    """Every bucket meeting [start, end), in order, as UTC instants."""
    starts: list[datetime] = []
    if start >= end:
        return starts
    current = bucket_start(start, bucket, tz)
    end = end.astimezone(UTC)
    while current < end:
        starts.append(current)
        if bucket == "hour":
            nxt = bucket_start(current + timedelta(hours=1), bucket, tz)
        else:
            next_day = current.astimezone(tz).date() + timedelta(days=1)
            nxt = local_midnight(next_day, tz).astimezone(UTC)
        if nxt <= current:  # a zone oddity: never loop forever
            nxt = current + timedelta(hours=1)
        current = nxt
    return starts


# -- public queries ------------------------------------------------------------------


def summary(con: duckdb.DuckDBPyConnection, q: StatsQuery) -> Summary:
    """Totals over [start, end), optionally split by ``q.group_by``, and the top keywords.

    Totals count each reply once; with ``group_by='campaign'`` the groups hold only
    the replies that belong to a campaign (a reply in two overlapping campaigns
    counts in both), so they need not add up to the totals.
    """
    _check_campaign(con, q.campaign)
    aggregates = stats_sql(con)
    source, params = _source(con, q, join_campaigns=False)
    row = con.execute(f"SELECT {aggregates} {source}", params).fetchone()
    assert row is not None
    totals = row_stats(row)
    groups: list[Group] = []
    if q.group_by is not None:
        key = _group_key(con, q.group_by)
        source, params = _source(con, q, join_campaigns=q.group_by == "campaign")
        extra = ", any_value(c.delivered)" if q.group_by == "campaign" else ", NULL"
        rows = con.execute(
            f"SELECT {key}, {aggregates}{extra} {source} GROUP BY {key} "
            f"ORDER BY count(*) DESC, {key} NULLS LAST",
            params,
        ).fetchall()
        for r in rows:
            stats = row_stats(r[1:8])
            delivered = None if r[8] is None else int(r[8])
            groups.append(
                Group(
                    key=r[0],
                    stats=stats,
                    delivered=delivered,
                    reply_rate=share(stats.senders, delivered) if delivered else None,
                    opt_out_rate=share(stats.stop_senders, delivered) if delivered else None,
                )
            )
    return Summary(
        start=q.start.astimezone(q.zone),
        end=q.end.astimezone(q.zone),
        tz=q.tz,
        group_by=q.group_by,
        campaign=q.campaign,
        totals=totals,
        groups=groups,
        keywords=top_keywords(con, q, checked=True),
        median_assembly_available=has_column(con, TABLE, LAST_PART_COLUMN),
    )


def top_keywords(
    con: duckdb.DuckDBPyConnection, q: StatsQuery, *, checked: bool = False
) -> list[KeywordCount]:
    """The ``q.top`` most frequent non-empty keywords (ties: alphabetical)."""
    if not checked:
        _check_campaign(con, q.campaign)
    source, params = _source(con, q, join_campaigns=False)
    total_row = con.execute(f"SELECT count(*) {source}", params).fetchone()
    total = int(total_row[0]) if total_row else 0
    rows = con.execute(
        f"SELECT r.keyword, count(*) AS n {source} AND r.keyword <> '' "
        "GROUP BY r.keyword ORDER BY n DESC, r.keyword LIMIT $top",
        {**params, "top": q.top},
    ).fetchall()
    return [KeywordCount(keyword=k, replies=int(n), share=share(int(n), total)) for k, n in rows]


def timeseries(con: duckdb.DuckDBPyConnection, q: StatsQuery) -> Timeseries:
    """Counts per bucket (``q.bucket``, default hour) in zone ``q.tz``, empty buckets as zeros."""
    _check_campaign(con, q.campaign)
    bucket = q.bucket or "hour"
    tz = q.zone
    source, params = _source(con, q, join_campaigns=q.group_by == "campaign")
    key = _group_key(con, q.group_by) if q.group_by else "NULL"
    rows = con.execute(
        f"SELECT {key} AS k, epoch_us({_BUCKET_EXPRS[bucket]}) AS b, count(*), "
        "count(DISTINCT r.sender), count(*) FILTER (WHERE r.is_stop), "
        "count(*) FILTER (WHERE r.parts_expected > 1), count(*) FILTER (WHERE NOT r.complete) "
        f"{source} GROUP BY k, b ORDER BY k NULLS LAST, b",
        {**params, "tz": q.tz},
    ).fetchall()
    buckets = bucket_starts(q.start, q.end, bucket, tz)
    by_key: dict[str | None, dict[datetime, Point]] = {}
    for k, b, n, senders, stops, multipart, incomplete in rows:
        t = _from_epoch_us(int(b))
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
    known = set(buckets)
    extra = {t for points in by_key.values() for t in points if t not in known}
    buckets = sorted(known | extra)
    series = [
        Series(
            key=k,
            points=[
                dataclasses.replace(points.get(t) or Point(t), t=t.astimezone(tz)) for t in buckets
            ],
        )
        for k, points in by_key.items()
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


def encode_cursor(received_at_us: int, reply_id: str) -> str:
    return f"{received_at_us}.{reply_id}"


def decode_cursor(cursor: str) -> tuple[int, str]:
    """``<received_at in µs since the epoch>.<reply_id>``: any such position is valid."""
    if not _CURSOR.search(cursor):
        raise InvalidQueryError("cursor", "not a cursor returned by this API")
    us, _, reply_id = cursor.partition(".")
    return int(us), reply_id


def list_replies(con: duckdb.DuckDBPyConnection, f: ReplyFilter) -> ReplyPage:
    """Reply rows, newest first (``received_at`` then ``reply_id`` descending).

    Page with ``next_cursor`` (stable while rows arrive) or with ``offset``; with
    both, ``offset`` rows after the cursor's position are skipped.
    Times are shown in zone ``f.tz``.
    """
    tz = ZoneInfo(f.tz)
    # A table from before a column was added (not yet migrated by a sink) lacks it.
    present = table_columns(con, TABLE)
    columns = [c for c in COLUMN_NAMES if c in present]
    where: list[str] = []
    params: dict[str, Any] = {"limit": f.limit + 1}
    for name, sql, value in (
        ("start", "r.received_at >= $start", f.start),
        ("end", "r.received_at < $end", f.end),
        ("sender", "r.sender = $sender", f.sender),
        ("recipient", "r.recipient = $recipient", f.recipient),
        ("keyword", "r.keyword = $keyword", f.keyword),
        ("is_stop", "r.is_stop = $is_stop", f.is_stop),
        ("complete", "r.complete = $complete", f.complete),
    ):
        if value is not None:
            where.append(sql)
            params[name] = value
    if f.cursor is not None:
        us, reply_id = decode_cursor(f.cursor)
        where.append(
            "(epoch_us(r.received_at) < $cur_us OR "
            "(epoch_us(r.received_at) = $cur_us AND r.reply_id < $cur_id))"
        )
        params.update(cur_us=us, cur_id=reply_id)
    sql = (
        f"SELECT {', '.join('r.' + c for c in columns)}, epoch_us(r.received_at) FROM {TABLE} r"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY r.received_at DESC, r.reply_id DESC LIMIT $limit"
    )
    if f.offset is not None:
        sql += " OFFSET $offset"
        params["offset"] = f.offset
    rows = con.execute(sql, params).fetchall()
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    items = []
    for row in rows:
        item = dict(zip(columns, row[:-1], strict=True))
        for name, value in item.items():
            if isinstance(value, datetime):
                item[name] = value.astimezone(tz)
        items.append(item)
    next_cursor = None
    if more and rows:
        next_cursor = encode_cursor(int(rows[-1][-1]), str(rows[-1][0]))
    return ReplyPage(
        items=items,
        limit=f.limit,
        offset=f.offset,
        next_cursor=next_cursor,
        has_more=more,
        columns=columns,
    )
