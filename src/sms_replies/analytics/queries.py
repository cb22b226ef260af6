"""Statistics over the ``replies`` table, one definition for every store.

Each query is written once with SQLAlchemy Core and compiled for the store the
:class:`~sms_replies.stores.readers.Reader` reads (DuckDB, PostgreSQL,
ClickHouse; :mod:`sms_replies.stores.dialects` holds the few constructs whose
SQL differs). Every value that comes from the caller travels as a bound
parameter; grouping keys and buckets are picked from fixed choices.

Definitions (``docs/analytics.md`` explains them for analysts):

- ``replies``: rows whose ``received_at`` is in [start, end).
- ``senders``: distinct ``sender`` numbers among them; ``stop_senders``: distinct
  senders of at least one STOP.
- ``stops`` / ``stop_share``: replies with ``is_stop``, and their share of replies.
- ``multipart`` / ``multipart_share``: replies announced as long SMS (``parts_expected > 1``).
- ``incomplete`` / ``incomplete_share``: replies with ``complete = false`` (a part
  never arrived before expiry), as a share of *all* replies.
- ``median_assembly_seconds``: median of (``last_part_at`` - ``received_at``), in
  seconds, over the long replies (``parts_expected > 1``) of which at least two
  parts arrived (complete or not): single messages, and long replies stored with
  one part only (an incomplete or late part alone), have no assembly time and do
  not count. Null when the range holds no such reply, and when the table predates
  the ``last_part_at`` column (``median_assembly_available`` is then false).
- Top keywords: the most frequent non-empty ``keyword`` values, with counts and
  their share of all replies (ties in byte order).

Campaigns (:mod:`sms_replies.analytics.campaigns`): a reply whose ``campaign``
column is set belongs to the campaign of that name only (declared or not); any
other reply belongs to each declared campaign whose window and number it
matches. Shares are null when there is no reply. A store without a ``replies``
table reads as empty.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    distinct,
    false,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.sql.selectable import TableClause
from sqlalchemy.types import Integer

from sms_replies.analytics.params import (
    DEFAULT_TZ,
    InvalidQueryError,
    StatsQuery,
    UnknownCampaignError,
    local_midnight,
)
from sms_replies.schema import COLUMN_NAMES, TABLE
from sms_replies.stores.dialects import (
    BinaryOrder,
    BucketStart,
    CountDistinctIf,
    CountIf,
    EpochSeconds,
    Median,
    NamedKey,
    Seconds,
)
from sms_replies.stores.readers import Reader

CAMPAIGNS_TABLE: Final = "campaigns"
LAST_PART_COLUMN: Final = "last_part_at"
MAX_PAGE: Final = 1000
# A position in the newest-first order (the API's OpenAPI document states this pattern).
CURSOR_PATTERN: Final = r"^(?:0|[1-9][0-9]{0,17})\.[^\x00-\x1f\x7f]*$"
_CURSOR: Final = re.compile(CURSOR_PATTERN)

CAMPAIGN_COLUMN: Final = "campaign"

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
    campaign: str | None = None
    limit: int = 100
    offset: int | None = None
    cursor: str | None = None

    def __post_init__(self) -> None:
        if self.campaign is not None and not self.campaign.strip():
            raise InvalidQueryError("campaign", "empty campaign name")
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


@dataclass(frozen=True, slots=True)
class DeclaredCampaign:
    """A declared campaign's window (the columns membership needs)."""

    name: str
    channel: str
    recipient: str | None
    start: datetime
    end: datetime
    delivered: int | None


class StoreView:
    """What one reader's store holds: the tables (aliased ``r`` and ``c``) and their columns."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.reply_columns = reader.columns(TABLE)
        self.campaign_columns = reader.columns(CAMPAIGNS_TABLE)
        self.r: TableClause | None = None
        if self.reply_columns:
            self.r = reader.table(TABLE).alias("r")  # type: ignore[assignment]

    @property
    def has_replies(self) -> bool:
        return bool(self.reply_columns)

    @property
    def has_campaigns(self) -> bool:
        return bool(self.campaign_columns)

    @property
    def attributed(self) -> bool:
        """Whether replies carry the ``campaign`` column (a table not migrated lacks it)."""
        return CAMPAIGN_COLUMN in self.reply_columns

    @property
    def median_available(self) -> bool:
        return LAST_PART_COLUMN in self.reply_columns

    def replies(self) -> TableClause:
        assert self.r is not None
        return self.r

    def declared(self, name: str | None = None) -> list[DeclaredCampaign]:
        if not self.has_campaigns:
            return []
        t = self.reader.table(CAMPAIGNS_TABLE)
        stmt = select(t.c.name, t.c.channel, t.c.recipient, t.c.start_at, t.c.end_at, t.c.delivered)
        if name is not None:
            stmt = stmt.where(t.c.name == name)
        return [
            DeclaredCampaign(str(n), str(ch), rcpt, s, e, None if d is None else int(d))
            for n, ch, rcpt, s, e, d in self.reader.fetch(stmt)
        ]


def _window(r: TableClause, c: DeclaredCampaign) -> ColumnElement[bool]:
    """Whether reply r is in declared campaign c's window and on its number (constants)."""
    cond = and_(r.c.received_at >= c.start, r.c.received_at < c.end, r.c.channel == c.channel)
    if c.channel == "long_number":
        cond = and_(cond, r.c.recipient == c.recipient)
    return cond


def _campaign_filter(view: StoreView, name: str) -> ColumnElement[bool]:
    """The replies of campaign ``name``; UnknownCampaignError unless it is declared or
    carried by a reply (its callback URL's)."""
    r = view.replies()
    declared = view.declared(name)
    if declared:
        window = _window(r, declared[0])
        if not view.attributed:
            return window
        return or_(r.c.campaign == name, and_(r.c.campaign.is_(None), window))
    if view.attributed:
        found = view.reader.fetch(select(func.count()).select_from(r).where(r.c.campaign == name))
        if found and found[0][0]:
            return r.c.campaign == name
    raise UnknownCampaignError(name)


def _check_campaign(view: StoreView, name: str | None) -> None:
    if name is None:
        return
    if not view.has_replies:
        if not view.declared(name):
            raise UnknownCampaignError(name)
        return
    _campaign_filter(view, name)


def _range(view: StoreView, q: StatsQuery) -> list[ColumnElement[bool]]:
    r = view.replies()
    where = [r.c.received_at >= q.start, r.c.received_at < q.end]
    if q.campaign is not None:
        where.append(_campaign_filter(view, q.campaign))
    return where


def median_condition(r: TableClause) -> ColumnElement[bool]:
    """The replies whose assembly time counts (see the module docstring)."""
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


#: The replies' columns the figures need (the declared campaigns' union carries them).
_FIGURE_COLUMNS: Final = (
    "reply_id",
    "sender",
    "is_stop",
    "parts_expected",
    "parts_received",
    "complete",
    "received_at",
    LAST_PART_COLUMN,
)

Columns = Callable[[Any], list[ColumnElement[Any]]]


def membership(view: StoreView, r: TableClause, c: DeclaredCampaign) -> ColumnElement[bool]:
    """Whether reply r belongs to declared campaign c: its URL named c, or (naming none)
    it is in c's window and on c's number."""
    window = _window(r, c)
    if not view.attributed:
        return window
    return or_(r.c.campaign == c.name, and_(r.c.campaign.is_(None), window))


def declared_part(
    view: StoreView, q: StatsQuery | None, columns: Columns, *, name: str | None = None
) -> Select[Any] | None:
    """SELECT g_key, ``columns(u)`` FROM u, to be grouped by g_key: u holds each
    campaign's replies (in q's range) under its name. One branch takes every reply whose
    callback URL named a campaign (declared or not) under that name; then one branch per
    declared campaign (or ``name``) takes the replies naming none that are in its window
    and on its number, with the window as bound constants; UNION ALL (a reply in two
    windows is in both). None when no reply can belong to a campaign.

    Not a join on the membership rule: ClickHouse 18.16 joins on equality only, and a
    cross join of replies and campaigns costs their product; the windows' constants
    let each store skip the rest of the table.
    """
    wanted = name if name is not None else q.campaign if q else None
    campaigns = view.declared(wanted)
    r = view.replies()
    carried = [r.c[n] for n in _FIGURE_COLUMNS if n in view.reply_columns]
    in_range = [r.c.received_at >= q.start, r.c.received_at < q.end] if q is not None else []
    if view.reader.backend == "clickhouse":
        return _campaign_keys_clickhouse(view, campaigns, wanted, carried, in_range, columns)
    branches = []
    if view.attributed:
        named = r.c.campaign.is_not(None) if wanted is None else r.c.campaign == wanted
        branches.append(select(r.c.campaign.label("g_key"), *carried).where(named, *in_range))
    for c in campaigns:
        window = _window(r, c)
        if view.attributed:
            window = and_(r.c.campaign.is_(None), window)
        branches.append(select(NamedKey(c.name).label("g_key"), *carried).where(window, *in_range))
    if not branches:
        return None
    u = (union_all(*branches) if len(branches) > 1 else branches[0]).subquery("u")
    return select(u.c.g_key, *columns(u))


#: Declared campaigns one ClickHouse pass marks with a bit each (bit 0: the URL's
#: campaign), in one UInt64; beyond, each reply's names are built as an array.
CLICKHOUSE_MASK_CAMPAIGNS: Final = 62


def _campaign_keys_clickhouse(
    view: StoreView,
    campaigns: list[DeclaredCampaign],
    wanted: str | None,
    carried: Sequence[ColumnElement[Any]],
    in_range: Sequence[ColumnElement[bool]],
    columns: Columns,
) -> Select[Any] | None:
    """:func:`declared_part` for ClickHouse in one pass over the table: each reply's
    campaigns (its URL's; each window it is in) as the bits of one integer,
    ``arrayJoin(bitmaskToArray(...))``-ed into one row per campaign (none: no row),
    then named. Branches of a UNION ALL would each read the table (with FINAL, which
    18.16 does slowly); an array of names per reply cost 4x the integer (10 M rows,
    18.16: 14 s to build the arrays).
    """
    if len(campaigns) > CLICKHOUSE_MASK_CAMPAIGNS:
        return _campaign_arrays_clickhouse(view, campaigns, wanted, carried, in_range, columns)
    r = view.replies()
    if not view.attributed and not campaigns:
        return None
    # Each reply's number (its channel, and for a long number its recipient) as a small
    # integer, computed once per row: each window then compares that integer and the
    # time, instead of the Nullable strings again (18.16 evaluates every window's
    # condition on every row: 10 M rows, 20 windows, 3.2 -> 2.4 s CPU for the mask).
    numbers = sorted({_number(c) for c in campaigns}, key=lambda n: (n[0], n[1] or ""))
    number: ColumnElement[Any] = literal_column("0")
    if numbers:
        whens: list[ColumnElement[Any]] = []
        for j, (channel, recipient) in enumerate(numbers, start=1):
            same = r.c.channel == channel
            if recipient is not None:
                same = and_(same, r.c.recipient == recipient)
            whens += [func.ifNull(same, 0), _integer(f"number{j}", j)]
        number = func.multiIf(*whens, literal_column("0"))
        if view.attributed:
            number = getattr(func, "if")(r.c.campaign.is_(None), number, literal_column("0"))
    url_campaign = [r.c.campaign] if view.attributed else []
    n = select(number.label("g_number"), *url_campaign, *carried).where(*in_range).subquery("n")
    bits: list[ColumnElement[Any]] = []
    if view.attributed:
        named = n.c.campaign.is_not(None) if wanted is None else n.c.campaign == wanted
        bits.append(func.toUInt64(func.ifNull(named, 0)))  # 18.16: conditions may be Nullable
    for i, c in enumerate(campaigns, start=1):
        j = numbers.index(_number(c)) + 1
        window = and_(
            n.c.g_number == _integer(f"number{j}", j),
            n.c.received_at >= c.start,
            n.c.received_at < c.end,
        )
        bits.append(func.toUInt64(func.ifNull(window, 0)) * _integer(f"bit{i}", 1 << i))
    mask = bits[0]
    for bit in bits[1:]:
        mask = mask + bit
    k_campaign = [n.c.campaign] if view.attributed else []
    n_carried = [n.c[str(col.key)] for col in carried]
    k = select(
        func.arrayJoin(func.bitmaskToArray(mask)).label("g_bit"), *k_campaign, *n_carried
    ).subquery("k")
    name: ColumnElement[Any] = literal_column("''")
    if campaigns:
        name = func.transform(
            k.c.g_bit,
            func.array(*(_integer(f"bit{i}", 1 << i) for i in range(1, len(campaigns) + 1))),
            func.array(*(NamedKey(c.name) for c in campaigns)),
            literal_column("''"),
        )
    if view.attributed:
        name = getattr(func, "if")(k.c.g_bit == 1, func.ifNull(k.c.campaign, ""), name)
    kept = [k.c[str(col.key)] for col in carried]
    u = select(name.label("g_key"), *kept).subquery("u")
    return select(u.c.g_key, *columns(u))


def _number(c: DeclaredCampaign) -> tuple[str, str | None]:
    """The number a declared campaign's window is on: its channel, and its recipient for a
    long number (a short-number campaign takes any reply of the short number)."""
    return (c.channel, c.recipient if c.channel == "long_number" else None)


def _integer(name: str, value: int) -> ColumnElement[Any]:
    return bindparam(name, value, type_=Integer())


def _campaign_arrays_clickhouse(
    view: StoreView,
    campaigns: list[DeclaredCampaign],
    wanted: str | None,
    carried: Sequence[ColumnElement[Any]],
    in_range: Sequence[ColumnElement[bool]],
    columns: Columns,
) -> Select[Any] | None:
    """:func:`_campaign_keys_clickhouse` for more campaigns than bits: each reply's
    campaign names as an array, ``arrayJoin``-ed into one row per name."""
    r = view.replies()
    call = getattr(func, "if")
    empty = func.emptyArrayString()
    parts: list[ColumnElement[Any]] = []
    if view.attributed:
        named = r.c.campaign.is_not(None) if wanted is None else r.c.campaign == wanted
        named = func.ifNull(named, 0)  # 18.16: a Nullable condition makes a Nullable array
        parts.append(call(named, func.array(func.ifNull(r.c.campaign, "")), empty))
    for c in campaigns:
        window = _window(r, c)
        if view.attributed:
            window = and_(r.c.campaign.is_(None), window)
        parts.append(call(func.ifNull(window, 0), func.array(NamedKey(c.name)), empty))
    if not parts:
        return None
    keys = parts[0] if len(parts) == 1 else func.arrayConcat(*parts)
    u = select(func.arrayJoin(keys).label("g_key"), *carried).where(*in_range).subquery("u")
    return select(u.c.g_key, *columns(u))


def _group_order(groups: list[Group]) -> list[Group]:
    """Most replies first, then by key (byte order), the null key last."""
    return sorted(groups, key=lambda g: (-g.stats.replies, g.key is None, g.key or ""))


def _from_epoch(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def _from_epoch_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


#: Offset changes of a zone in a range beyond which buckets use the store's zone
#: functions instead of arithmetic (a CASE of that many branches).
MAX_TRANSITIONS: Final = 64
_TRANSITION_STEP: Final = timedelta(days=7)  # zones never change offset twice in a week


def _offset(t: datetime, tz: ZoneInfo) -> int:
    offset = t.astimezone(tz).utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


def zone_offsets(
    tz: ZoneInfo, start: datetime, end: datetime
) -> tuple[int, list[tuple[int, int]]] | None:
    """UTC offset of ``tz`` at ``start`` and each change before ``end``: (epoch second of
    the change, offset from then on); None beyond :data:`MAX_TRANSITIONS` changes, or
    before 1970 (the arithmetic relies on positive seconds)."""
    if start < _EPOCH + timedelta(days=2):
        return None
    first = _offset(start, tz)
    changes: list[tuple[int, int]] = []
    lo, current = start.astimezone(UTC), first
    while lo < end:
        hi = min(lo + _TRANSITION_STEP, end.astimezone(UTC))
        after = _offset(hi, tz)
        if after != current:  # the change is in (lo, hi]: find its second
            a, b = int(lo.timestamp()), int(hi.timestamp())
            while b - a > 1:
                mid = (a + b) // 2
                if _offset(_from_epoch(mid), tz) == current:
                    a = mid
                else:
                    b = mid
            changes.append((b, after))
            if len(changes) > MAX_TRANSITIONS:
                return None
            current = after
        lo = hi
    return first, changes


def _bucket_expression(value: ColumnElement[Any], bucket: str, q: StatsQuery) -> ColumnElement[Any]:
    """The bucket of each row as an integer: hours, the start's epoch second; days, the
    local day's start in local seconds (:func:`_bucket_time` turns it into an instant).

    Whole-second arithmetic on the zone's offset, a CASE over the changes of the range:
    exact across DST, and ten times cheaper than the stores' zone functions. A range
    with too many changes uses those functions (:class:`BucketStart`).
    """
    offsets = zone_offsets(q.zone, q.start, q.end)
    if offsets is None:
        return BucketStart(value, bucket, bindparam("tz", q.tz))
    first, changes = offsets
    s = EpochSeconds(value)
    offset: ColumnElement[Any] = bindparam("off", first, type_=Integer())
    if changes:
        whens = []
        before = first
        for i, (at, after) in enumerate(changes):
            when = s < bindparam(f"at{i}", at, type_=Integer())
            whens.append((when, bindparam(f"off{i}", before, type_=Integer())))
            before = after
        offset = case(*whens, else_=bindparam("off_last", before, type_=Integer()))
    local = s + offset
    if bucket == "hour":
        return s - local % 3600
    return local - local % 86400


def _bucket_time(value: int, bucket: str, tz: ZoneInfo, arithmetic: bool) -> datetime:
    if bucket == "hour" or not arithmetic:
        return _from_epoch(value)
    day = date(1970, 1, 1) + timedelta(seconds=value)
    return local_midnight(day, tz).astimezone(UTC)


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


def encode_cursor(received_at_us: int, reply_id: str) -> str:
    return f"{received_at_us}.{reply_id}"


def decode_cursor(cursor: str) -> tuple[int, str]:
    """``<received_at in µs since the epoch>.<reply_id>``: any such position is valid."""
    if not _CURSOR.search(cursor):
        raise InvalidQueryError("cursor", "not a cursor returned by this API")
    us, _, reply_id = cursor.partition(".")
    return int(us), reply_id


def _epoch_us(t: datetime) -> int:
    delta = t.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def list_replies(reader: Reader, f: ReplyFilter) -> ReplyPage:
    """Reply rows, newest first (``received_at`` then ``reply_id`` descending).

    Page with ``next_cursor`` (stable while rows arrive) or with ``offset``; with
    both, ``offset`` rows after the cursor's position are skipped.
    Times are shown in zone ``f.tz``.
    """
    tz = ZoneInfo(f.tz)
    view = StoreView(reader)
    # A table from before a column was added (not yet migrated by a sink) lacks it.
    columns = [c for c in COLUMN_NAMES if c in view.reply_columns]
    _check_campaign(view, f.campaign)
    if not view.has_replies:
        return ReplyPage(items=[], limit=f.limit, offset=f.offset, next_cursor=None)
    r = view.replies()
    where: list[ColumnElement[bool]] = []
    filters: list[tuple[Any, ColumnElement[Any], str]] = [
        (f.start, r.c.received_at, ">="),
        (f.end, r.c.received_at, "<"),
        (f.sender, r.c.sender, "="),
        (f.recipient, r.c.recipient, "="),
        (f.keyword, r.c.keyword, "="),
        (f.is_stop, r.c.is_stop, "="),
        (f.complete, r.c.complete, "="),
    ]
    for value, col, op in filters:
        if value is not None:
            where.append(col >= value if op == ">=" else col < value if op == "<" else col == value)
    if f.campaign is not None:  # the same membership as the campaign's figures
        where.append(_campaign_filter(view, f.campaign))
    if f.cursor is not None:
        us, reply_id = decode_cursor(f.cursor)
        position = _from_epoch_us(us)
        where.append(
            or_(
                r.c.received_at < position,
                and_(r.c.received_at == position, r.c.reply_id < reply_id),
            )
        )
    stmt = (
        select(*(r.c[c] for c in columns))
        .where(*where)
        .order_by(r.c.received_at.desc(), BinaryOrder(r.c.reply_id).desc())
        .limit(bindparam("limit", f.limit + 1))
    )
    if f.offset is not None:
        stmt = stmt.offset(bindparam("offset", f.offset))
    rows = reader.fetch(stmt)
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    items = []
    booleans = {"is_stop", "complete", "late"}
    for row in rows:
        item = dict(zip(columns, row, strict=True))
        for name, value in item.items():
            if isinstance(value, datetime):
                item[name] = value.astimezone(tz)
            elif name in booleans and value is not None:
                item[name] = bool(value)
            elif isinstance(value, tuple):
                item[name] = list(value)
        items.append(item)
    next_cursor = None
    if more and rows:
        last = dict(zip(columns, rows[-1], strict=True))
        next_cursor = encode_cursor(_epoch_us(last["received_at"]), str(last["reply_id"]))
    return ReplyPage(
        items=items,
        limit=f.limit,
        offset=f.offset,
        next_cursor=next_cursor,
        has_more=more,
        columns=columns,
    )
