"""Campaign membership: which replies belong to a campaign (its URL's name, or its
window and number), as a filter, as rows keyed by campaign (one pass on ClickHouse),
and on ClickHouse as each reply's declared campaigns in the bits of one integer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.sql.selectable import TableClause
from sqlalchemy.types import Integer

from sms_replies.analytics.params import StatsQuery, UnknownCampaignError
from sms_replies.analytics.queries._view import LAST_PART_COLUMN, DeclaredCampaign, StoreView
from sms_replies.stores.dialects import NamedKey


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
    if not view.attributed and not campaigns:
        return None
    n, window_bits = _numbered(view, campaigns, carried, in_range)
    bits: list[ColumnElement[Any]] = []
    if view.attributed:
        named = n.c.campaign.is_not(None) if wanted is None else n.c.campaign == wanted
        bits.append(func.toUInt64(func.ifNull(named, 0)))  # 18.16: conditions may be Nullable
    bits.extend(window_bits)
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


def _numbered(
    view: StoreView,
    campaigns: list[DeclaredCampaign],
    carried: Sequence[ColumnElement[Any]],
    in_range: Sequence[ColumnElement[bool]],
) -> tuple[Any, list[ColumnElement[Any]]]:
    """The replies (in range) as subquery ``n``: their number (``g_number``), their time
    as an integer (``g_t``) when the windows make a :func:`_window_table`, their URL's
    ``campaign`` and ``carried``; and the terms whose sum is the bits (1 << i, from 1) of
    the windows of ``campaigns`` a row of ``n`` is in."""
    r = view.replies()
    # Each reply's number (its channel, and for a long number its recipient) as a small
    # integer, computed once per row: the windows then look at that integer and the
    # time, instead of the Nullable strings again (18.16 evaluates every window's
    # condition on every row: 10 M rows, 20 windows, 3.2 -> 2.4 s CPU for the mask).
    # The windows as one table of (number, time slice) when it is small enough
    # (_window_table), else each window compared.
    numbers = sorted({_number(c) for c in campaigns}, key=lambda n: (n[0], n[1] or ""))
    datetime64 = bool(getattr(view.reader.dialect, "datetime64", False))
    lut = _window_table(campaigns, numbers, datetime64)
    number = _number_expression(view, r, numbers)
    url_campaign = [r.c.campaign] if view.attributed else []
    instant = [_instant(r, datetime64).label("g_t")] if lut is not None else []
    n = (
        select(number.label("g_number"), *instant, *url_campaign, *carried)
        .where(*in_range)
        .subquery("n")
    )
    if lut is not None:
        return n, [_window_bits(n, lut)]
    bits: list[ColumnElement[Any]] = []
    for i, c in enumerate(campaigns, start=1):
        j = numbers.index(_number(c)) + 1
        window = and_(
            n.c.g_number == _integer(f"number{j}", j),
            n.c.received_at >= c.start,
            n.c.received_at < c.end,
        )
        bits.append(func.toUInt64(func.ifNull(window, 0)) * _integer(f"bit{i}", 1 << i))
    return n, bits


def campaign_masks_clickhouse(
    view: StoreView, name: str | None = None
) -> tuple[Select[Any], list[str]] | None:
    """The replies (all of them; or of campaign ``name``) that belong to a declared
    campaign, each with its declared campaigns as the bits of ``g_mask`` (bit i, from 1:
    the i-th of the returned names) and the columns of :data:`_FIGURE_COLUMNS` but the
    key, for figures aggregated without one row per membership. A reply whose URL named
    a declared campaign has that campaign's bit (a name nobody declared: none); one
    naming none, the bits of the windows it is in. None when no campaign is declared,
    or more than :data:`CLICKHOUSE_MASK_CAMPAIGNS` (then :func:`declared_part`)."""
    campaigns = view.declared(name)
    if not campaigns or len(campaigns) > CLICKHOUSE_MASK_CAMPAIGNS:
        return None
    r = view.replies()
    # count() needs no column: reply_id (a String) is not read.
    names = [c for c in _FIGURE_COLUMNS if c != "reply_id" and c in view.reply_columns]
    carried = [r.c[c] for c in names]
    n, terms = _numbered(view, campaigns, carried, ())
    if view.attributed:
        # The URL's campaign looked up among the declared names (one hash lookup a row);
        # g_number is 0 for such a reply, so it has no window bit.
        terms.append(
            func.transform(
                func.ifNull(n.c.campaign, ""),
                func.array(*(NamedKey(c.name) for c in campaigns)),
                func.array(
                    *(
                        func.toUInt64(_integer(f"bit{i}", 1 << i))
                        for i in range(1, len(campaigns) + 1)
                    )
                ),
                func.toUInt64(literal_column("0")),
            )
        )
    mask = terms[0]
    for term in terms[1:]:
        mask = mask + term
    masked = select(mask.label("g_mask"), *(n.c[str(col.key)] for col in carried)).subquery("m")
    return (
        select(*masked.c).where(masked.c.g_mask != literal_column("0")),
        [c.name for c in campaigns],
    )


def _number(c: DeclaredCampaign) -> tuple[str, str | None]:
    """The number a declared campaign's window is on: its channel, and its recipient for a
    long number (a short-number campaign takes any reply of the short number)."""
    return (c.channel, c.recipient if c.channel == "long_number" else None)


def _integer(name: str, value: int) -> ColumnElement[Any]:
    return bindparam(name, value, type_=Integer())


def _number_expression(
    view: StoreView, r: TableClause, numbers: list[tuple[str, str | None]]
) -> ColumnElement[Any]:
    """Each reply's number as :func:`_campaign_keys_clickhouse` numbers them (1, 2, ...; 0:
    none, or a reply naming a campaign): arithmetic on 0/1 flags and one ``transform`` of
    the recipient, where a ``multiIf`` of ``channel = ... AND recipient = ...`` per number
    made 18.16 evaluate each comparison and its Nullable wrapper on every row (10 M rows:
    1.0 -> 0.4 s CPU)."""
    terms: list[ColumnElement[Any]] = []
    longs = [(j, rec) for j, (_, rec) in enumerate(numbers, start=1) if rec is not None]
    if longs:
        recipients = func.transform(
            func.assumeNotNull(r.c.recipient),
            func.array(*(NamedKey(rec) for _, rec in longs)),
            func.array(*(_integer(f"number{j}", j) for j, _ in longs)),
            literal_column("0"),
        )
        terms.append(func.toUInt8(r.c.channel == "long_number") * recipients)
    for j, (channel, recipient) in enumerate(numbers, start=1):
        if recipient is None:
            terms.append(func.toUInt8(r.c.channel == channel) * _integer(f"number{j}", j))
    if not terms:
        return literal_column("0")
    number = terms[0]
    for term in terms[1:]:
        number = number + term
    if view.attributed:
        number = func.isNull(r.c.campaign) * number
    return number


#: The most (number, time slice) entries :func:`_window_table` builds; beyond, each
#: window is compared on every row. Each entry is two integers in the statement's text
#: (18.16 refuses a statement over 256 KiB).
WINDOW_TABLE_ENTRIES: Final = 4096


@dataclass(frozen=True)
class _WindowTable:
    """The declared windows as a table: time from ``start`` to ``end`` (integers in the
    column's unit) cut in slices of ``step``, every window boundary on a slice's edge, so
    a slice is wholly in a window or wholly out of it; ``masks[i]`` is the campaigns' bits
    of entry ``keys[i]`` = (number - 1) * ``slices`` + slice (entries of no campaign are
    left out)."""

    start: int
    end: int
    step: int
    slices: int
    keys: list[int]
    masks: list[int]


def _bound(value: datetime, datetime64: bool) -> int:
    """A window bound in the column's unit, rounded up as :class:`Instant` binds it (whole
    seconds for DateTime, milliseconds for DateTime64(3)), which keeps ``>=`` and ``<``."""
    value = value.astimezone(UTC)
    if not datetime64:
        return math.ceil(value.timestamp())
    whole = value.replace(microsecond=0)
    return int(whole.timestamp()) * 1000 + math.ceil(value.microsecond / 1000)


def _window_table(
    campaigns: list[DeclaredCampaign], numbers: list[tuple[str, str | None]], datetime64: bool
) -> _WindowTable | None:
    """The windows of ``campaigns`` (bit i for the i-th, from 1) as a :class:`_WindowTable`;
    None when there is none or it would take more than :data:`WINDOW_TABLE_ENTRIES`."""
    windows = [
        (i, numbers.index(_number(c)), _bound(c.start, datetime64), _bound(c.end, datetime64))
        for i, c in enumerate(campaigns, start=1)
    ]
    windows = [w for w in windows if w[2] < w[3]]  # an empty window holds no reply
    if not windows:
        return None
    start = min(w[2] for w in windows)
    end = max(w[3] for w in windows)
    step = 0
    for _, _, lo, hi in windows:
        step = math.gcd(step, lo - start, hi - start)
    slices = (end - start) // step
    masks: dict[int, int] = {}
    for i, j, lo, hi in windows:
        first, last = (lo - start) // step, (hi - start) // step
        if len(masks) + last - first > WINDOW_TABLE_ENTRIES * 2:
            return None  # far over: stop counting
        for k in range(first, last):
            key = j * slices + k
            masks[key] = masks.get(key, 0) | 1 << i
    if len(masks) > WINDOW_TABLE_ENTRIES:
        return None
    keys = sorted(masks)
    return _WindowTable(start, end, step, slices, keys, [masks[k] for k in keys])


def _instant(r: TableClause, datetime64: bool) -> ColumnElement[Any]:
    """``received_at`` as an integer in the unit of :func:`_bound`."""
    if datetime64:
        return func.toUnixTimestamp64Milli(r.c.received_at)
    return func.toUInt32(r.c.received_at)


def _window_bits(n: Any, lut: _WindowTable) -> ColumnElement[Any]:
    """The bits of the windows a row of ``n`` (``g_number``, ``g_t``) is in: its entry of
    ``lut`` looked up by ``transform`` (a hash table of the entries), instead of each
    window's comparisons on every row (18.16 evaluates all of them on every row: 10 M
    rows, 20 windows, 1,256 entries, the mask 1.8 -> 1.25 s CPU)."""
    start = _integer("lut_start", lut.start)
    slice_of = func.intDiv(n.c.g_t - start, _integer("lut_step", lut.step))
    key = (n.c.g_number - 1) * _integer("lut_slices", lut.slices) + slice_of
    outside = or_(n.c.g_number == 0, n.c.g_t < start, n.c.g_t >= _integer("lut_end", lut.end))
    bits: ColumnElement[Any] = getattr(func, "if")(
        outside,
        func.toUInt64(literal_column("0")),
        func.transform(
            func.toUInt64(key),
            func.array(*(bindparam(None, v, type_=Integer()) for v in lut.keys)),
            func.array(*(bindparam(None, v, type_=Integer()) for v in lut.masks)),
            func.toUInt64(literal_column("0")),
        ),
    )
    return bits


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
