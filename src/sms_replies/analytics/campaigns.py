"""Campaigns: named windows of replies, declared by analysts, in the ``campaigns`` table.

A reply whose ``campaign`` column is set (it came through a per-campaign
callback URL, ``...&campaign=spring-A``) belongs to the declared campaign of
that name, whatever its time. Any other reply belongs to a campaign when it
was received in the campaign's [start, end) and, for a long-number campaign,
it was sent to the campaign's recipient number; for a short-number campaign,
it came through the short number. Rates use the campaign's delivered count when it is known:

- ``reply_rate``: distinct senders who replied / delivered messages;
- ``opt_out_rate``: distinct senders who sent a STOP / delivered messages.

Campaigns live in the ``campaigns`` table of the store the analytics read
(DuckDB, PostgreSQL or ClickHouse). Declaring in DuckDB writes through the
DuckDB sink while it owns the store, else takes the file's write lock for a few
milliseconds (see :mod:`sms_replies.stores.readers`).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    delete,
    false,
    func,
    literal_column,
    null,
    select,
    text,
    true,
    tuple_,
)

from sms_replies.analytics.params import InvalidQueryError, UnknownCampaignError
from sms_replies.analytics.queries import (
    CAMPAIGNS_TABLE,
    EMPTY_STATS,
    LAST_PART_COLUMN,
    Stats,
    StoreView,
    aggregates,
    campaign_masks_clickhouse,
    declared_part,
    median_condition,
    per_sender,
    row_stats,
    sender_sums,
    share,
)
from sms_replies.analytics.store import CAMPAIGNS_DDL
from sms_replies.errors import SmsRepliesError
from sms_replies.phone import DEFAULT_REGION, NotAPhoneNumber, to_e164
from sms_replies.records import Channel
from sms_replies.stores.dialects import CountIf, Median, Seconds
from sms_replies.stores.errors import StoreError
from sms_replies.stores.readers import (
    DEFAULT_TIMEOUT,
    ClickHouseReader,
    DuckDBReader,
    Reader,
    open_store,
)
from sms_replies.stores.url import StoreURL

CHANNELS: Final[tuple[Channel, ...]] = ("long_number", "short_number")
MAX_NAME = 200
_NAME = re.compile(r"^[^\x00-\x1f\x7f]+$")


class CampaignExistsError(SmsRepliesError):
    """A campaign of that name is already declared."""

    def __init__(self, name: str) -> None:
        super().__init__(f"campaign {name!r} already exists")
        self.name = name


def normalise_number(value: str, *, region: str = DEFAULT_REGION, param: str = "recipient") -> str:
    """E.164 (``+33612345678``) from an international or national number."""
    try:
        return to_e164(value, region)
    except NotAPhoneNumber as exc:
        raise InvalidQueryError(param, f"{value!r} is {exc}") from None


@dataclass(frozen=True, slots=True)
class Campaign:
    """A declared campaign; ``recipient`` (E.164) for long numbers, None for the short number."""

    name: str
    channel: Channel
    recipient: str | None
    start: datetime
    end: datetime
    delivered: int | None = None
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.name.strip() or len(self.name) > MAX_NAME or not _NAME.match(self.name):
            raise InvalidQueryError("name", f"1 to {MAX_NAME} printable characters")
        if self.channel not in CHANNELS:
            raise InvalidQueryError("channel", "long_number or short_number")
        if self.channel == "long_number" and not self.recipient:
            raise InvalidQueryError(
                "recipient", "a long-number campaign needs its recipient number"
            )
        if self.channel == "short_number" and self.recipient is not None:
            raise InvalidQueryError("recipient", "a short-number campaign has no recipient number")
        for param, value in (("start", self.start), ("end", self.end)):
            if value.tzinfo is None:
                raise InvalidQueryError(param, "an aware datetime (with a zone) is required")
        if self.start >= self.end:
            raise InvalidQueryError("end", "must be after start")
        if self.delivered is not None and self.delivered < 0:
            raise InvalidQueryError("delivered", "must be >= 0")

    @classmethod
    def create(
        cls,
        name: str,
        *,
        start: datetime,
        end: datetime,
        recipient: str | None = None,
        short_number: bool = False,
        delivered: int | None = None,
        region: str = DEFAULT_REGION,
    ) -> Campaign:
        """A campaign from user input: the recipient number is normalised to E.164."""
        if short_number and recipient:
            raise InvalidQueryError(
                "recipient", "give a recipient number or short_number, not both"
            )
        if not short_number and not recipient:
            raise InvalidQueryError("recipient", "give the recipient number (or short_number)")
        return cls(
            name=name.strip(),
            channel="short_number" if short_number else "long_number",
            recipient=None if recipient is None else normalise_number(recipient, region=region),
            start=start,
            end=end,
            delivered=delivered,
        )


@dataclass(frozen=True, slots=True)
class CampaignStats:
    campaign: Campaign
    stats: Stats
    reply_rate: float | None
    opt_out_rate: float | None


StoreTarget = StoreURL | Path


def _url(target: StoreTarget) -> StoreURL:
    return target if isinstance(target, StoreURL) else StoreURL("duckdb", path=target)


def _ensure_table(reader: Reader) -> None:
    """The campaigns table: created in a DuckDB store; the sinks create it in the others."""
    if reader.columns(CAMPAIGNS_TABLE):
        return
    if isinstance(reader, DuckDBReader):
        reader.raw().execute(CAMPAIGNS_DDL)
        reader.refresh()
        return
    raise StoreError(
        f"{reader.url} has no campaigns table yet: start the {reader.backend} sink once "
        "(it creates the tables), then declare the campaign"
    )


def declare_campaign(
    target: StoreTarget,
    campaign: Campaign,
    *,
    replace: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Campaign:
    """Store ``campaign`` (creating a DuckDB store if needed); :class:`CampaignExistsError`
    unless ``replace``. DuckDB: retries for ``timeout`` seconds while the sink holds the lock.

    ClickHouse keeps timestamps in whole seconds (18.16): a window is stored rounded up
    to the second, which selects the same whole-second replies.
    """
    created = datetime.now(UTC)
    with open_store(_url(target), timeout=timeout, write=True) as reader:
        _ensure_table(reader)
        t = reader.table(CAMPAIGNS_TABLE)
        found = reader.fetch(select(t.c.name).where(t.c.name == campaign.name))
        if found and not replace:
            raise CampaignExistsError(campaign.name)
        if found and reader.backend != "clickhouse":  # ClickHouse: the latest created_at wins
            reader.write(delete(t).where(t.c.name == campaign.name))
        try:
            reader.insert(
                CAMPAIGNS_TABLE,
                {
                    "name": campaign.name,
                    "channel": campaign.channel,
                    "recipient": campaign.recipient,
                    "start_at": campaign.start,
                    "end_at": campaign.end,
                    "delivered": campaign.delivered,
                    "created_at": created,
                },
            )
        except StoreError as exc:
            if "constraint" in str(exc).lower() or "duplicate" in str(exc).lower():
                raise CampaignExistsError(campaign.name) from None
            raise
    return dataclasses.replace(campaign, created_at=created)


def delete_campaign(target: StoreTarget, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Forget a campaign (its replies stay); :class:`UnknownCampaignError` if not declared."""
    url = _url(target)
    if url.backend == "duckdb" and url.path is not None and not url.path.exists():
        raise UnknownCampaignError(name)
    with open_store(url, timeout=timeout, write=True) as reader:
        if not reader.columns(CAMPAIGNS_TABLE):
            raise UnknownCampaignError(name)
        t = reader.table(CAMPAIGNS_TABLE)
        if not reader.fetch(select(t.c.name).where(t.c.name == name)):
            raise UnknownCampaignError(name)
        if reader.backend == "clickhouse":  # a mutation (18.16: no mutations_sync)
            reader.write(
                text(
                    f"ALTER TABLE `{reader.url.database}`.{CAMPAIGNS_TABLE} "
                    "DELETE WHERE name = :name"
                ).bindparams(name=name)
            )
            _wait_for_mutations(reader, timeout=max(timeout, 10.0))
        else:
            reader.write(delete(t).where(t.c.name == name))


def _wait_for_mutations(reader: Reader, *, timeout: float) -> None:
    pending = text(
        "SELECT count() FROM system.mutations "
        "WHERE database = :db AND table = :table AND is_done = 0"
    ).bindparams(db=reader.url.database, table=CAMPAIGNS_TABLE)
    deadline = time.monotonic() + timeout
    while reader.fetch(pending)[0][0]:
        if time.monotonic() > deadline:
            raise StoreError(
                f"{reader.url}: the campaign's deletion is not done after {timeout:g} s"
            )
        time.sleep(0.1)


def _campaign(row: Sequence[Any], tz: Any) -> Campaign:
    name, channel, recipient, start, end, delivered, created = row
    return Campaign(
        name=name,
        channel=channel,
        recipient=recipient,
        start=start.astimezone(tz),
        end=end.astimezone(tz),
        delivered=None if delivered is None else int(delivered),
        created_at=created.astimezone(tz),
    )


def _campaign_rows(reader: Reader, name: str | None) -> list[tuple[Any, ...]]:
    if not reader.columns(CAMPAIGNS_TABLE):
        return []
    t = reader.table(CAMPAIGNS_TABLE)
    stmt = select(
        t.c.name,
        t.c.channel,
        t.c.recipient,
        t.c.start_at,
        t.c.end_at,
        t.c.delivered,
        t.c.created_at,
    )
    if name is not None:
        stmt = stmt.where(t.c.name == name)
    rows = reader.fetch(stmt)
    return sorted(rows, key=lambda row: (-row[3].timestamp(), row[0]))


def list_campaigns(reader: Reader, *, tz: Any = UTC) -> list[Campaign]:
    """Declared campaigns, most recent start first; times in zone ``tz`` (a tzinfo)."""
    return [_campaign(row, tz) for row in _campaign_rows(reader, None)]


def _figures(view: StoreView, name: str | None) -> dict[str, Stats]:
    """Each campaign's figures, by name (DuckDB and PostgreSQL: undeclared names too;
    ClickHouse: the declared only, all :func:`campaign_stats` reports).

    DuckDB and PostgreSQL group by (campaign, sender) first, then sum, as the summary's
    totals do (:func:`~sms_replies.analytics.queries.per_sender`), and read the median
    in a statement of its own over the long replies only: two ``count(DISTINCT
    sender)`` per campaign cost more (10 M rows, DuckDB: 6.0 -> 3.9 s CPU).
    ClickHouse keeps one pass (each statement reads the table again):
    :func:`_figures_clickhouse`.
    """
    reader = view.reader
    if reader.backend == "clickhouse":
        return _figures_clickhouse(view, name)
    per = declared_part(view, None, per_sender, name=name)
    assert per is not None
    s = per.group_by(literal_column("g_key"), literal_column("sender")).subquery("s")
    sums = {
        row[0]: row[1:]
        for row in reader.fetch(select(s.c.g_key, *sender_sums(s)).group_by(s.c.g_key))
    }
    medians: dict[Any, Any] = {}
    if view.median_available and sums:
        sources: list[Any] = []

        def median(u: Any) -> list[ColumnElement[Any]]:
            sources.append(u)
            return [Median(Seconds(u.c[LAST_PART_COLUMN], u.c.received_at), median_condition(u))]

        part = declared_part(view, None, median, name=name)
        assert part is not None
        stmt = part.where(median_condition(sources[0])).group_by(literal_column("g_key"))
        medians = dict(reader.fetch(stmt))
    return {str(k): row_stats((*v, medians.get(k))) for k, v in sums.items()}


def _figures_clickhouse(view: StoreView, name: str | None) -> dict[str, Stats]:
    """:func:`_figures` on ClickHouse, one statement reading the table once: the replies
    grouped by their campaigns' bits (:func:`campaign_masks_clickhouse`; a few dozen
    groups), each group's counts, senders (``uniqExactState``) and assembly times, then
    each campaign's bit taking the groups that have it (``arrayJoin`` over those few
    rows, merging their states). One row per (reply, campaign) before grouping cost
    more (10 M rows, 18.16: see docs/analytics.md, Scale). Beyond
    :data:`CLICKHOUSE_MASK_CAMPAIGNS` campaigns, one row per membership
    (:func:`declared_part`)."""
    masked = campaign_masks_clickhouse(view, name)
    if masked is None:
        stmt = declared_part(view, None, lambda u: aggregates(view, u), name=name)
        if stmt is None:
            return {}
        rows = view.reader.fetch(stmt.group_by(literal_column("g_key")))
        return {str(row[0]): row_stats(row[1:]) for row in rows}
    part, names = masked
    m = part.subquery("m")
    if isinstance(view.reader, ClickHouseReader) and view.reader.has_grouping_sets():
        stmt = _by_sender_and_mask(view, m)
    else:
        per_mask = (
            select(m.c.g_mask, *_mask_group_columns(view, m)).group_by(m.c.g_mask).subquery("g")
        )
        bit = func.arrayJoin(func.bitmaskToArray(per_mask.c.g_mask)).label("g_bit")
        stmt = select(bit, *_campaign_columns(view, per_mask)).group_by(literal_column("g_bit"))
    by_bit = {1 << i: n for i, n in enumerate(names, start=1)}
    return {by_bit[int(row[0])]: row_stats(row[1:]) for row in view.reader.fetch(stmt)}


def _by_sender_and_mask(view: StoreView, m: Any) -> Select[Any]:
    """:func:`_figures_clickhouse`'s statement on a server with ``GROUPING SETS`` (18.16
    has none): one pass grouped by sender and by mask. A campaign's senders are the
    sender groups whose OR of masks has its bit (its STOP senders: the OR of their
    STOPs' masks), with no distinct-count states; its counts and assembly times come
    from the mask groups with its bit. chdb, 10 M rows: 1.04-1.12 against 1.19-1.27 s
    grouped by mask only (docs/analytics.md, Scale)."""
    call_if = getattr(func, "if")
    zero = func.toUInt64(literal_column("0"))
    columns: list[ColumnElement[Any]] = [
        (func.grouping(m.c.g_mask) == literal_column("0")).label("g_by_mask"),
        m.c.g_mask,
        func.groupBitOr(m.c.g_mask).label("g_or"),
        func.groupBitOr(call_if(m.c.is_stop == true(), m.c.g_mask, zero)).label("g_stop_or"),
        *_group_counts(view, m),
    ]
    sets = func.grouping_sets(tuple_(m.c.sender), tuple_(m.c.g_mask))
    g = select(*columns).group_by(sets).subquery("g")
    of_mask = g.c.g_by_mask == literal_column("1")
    of_sender = g.c.g_by_mask == literal_column("0")
    bit: ColumnElement[Any] = literal_column("g_bit")
    median: ColumnElement[Any] = null()
    if view.median_available:
        median = _middle(func.arraySort(func.groupArrayArrayIf(g.c.g_waits, of_mask)))
    return select(
        func.arrayJoin(func.bitmaskToArray(call_if(of_mask, g.c.g_mask, g.c.g_or))).label("g_bit"),
        func.sumIf(g.c.g_replies, of_mask),
        func.countIf(of_sender),
        func.countIf(and_(of_sender, func.bitAnd(g.c.g_stop_or, bit) != literal_column("0"))),
        func.sumIf(g.c.g_stops, of_mask),
        func.sumIf(g.c.g_multipart, of_mask),
        func.sumIf(g.c.g_incomplete, of_mask),
        median,
    ).group_by(bit)


def _middle(waits: ColumnElement[Any]) -> ColumnElement[Any]:
    """The median of a sorted array as the ClickHouse compilation of :class:`Median` takes
    it (the mean of the two middle values); null when it is empty."""
    size = func.length(waits)
    low = func.arrayElement(waits, func.intDiv(size + 1, 2))
    high = func.arrayElement(waits, func.intDiv(size, 2) + 1)
    median: ColumnElement[Any] = getattr(func, "if")(size == 0, null(), func.divide(low + high, 2))
    return median


def _mask_group_columns(view: StoreView, m: Any) -> list[ColumnElement[Any]]:
    """Per group of replies of one mask: what :func:`_campaign_columns` merges."""
    return [
        func.uniqExactState(m.c.sender).label("g_senders"),
        func.uniqExactIfState(m.c.sender, m.c.is_stop == true()).label("g_stop_senders"),
        *_group_counts(view, m),
    ]


def _group_counts(view: StoreView, m: Any) -> list[ColumnElement[Any]]:
    """A group's replies, STOPs, long and incomplete replies, and (when the store has
    ``last_part_at``) the assembly times of its long replies of 2+ parts."""
    columns: list[ColumnElement[Any]] = [
        func.count().label("g_replies"),
        CountIf(m.c.is_stop == true()).label("g_stops"),
        CountIf(m.c.parts_expected > 1).label("g_multipart"),
        CountIf(m.c.complete == false()).label("g_incomplete"),
    ]
    if view.median_available:
        seconds = func.toFloat64(Seconds(m.c[LAST_PART_COLUMN], m.c.received_at))
        columns.append(func.groupArrayIf(seconds, median_condition(m)).label("g_waits"))
    return columns


def _campaign_columns(view: StoreView, g: Any) -> list[ColumnElement[Any]]:
    """The columns of :func:`row_stats` for the groups of one bit; the median as the
    ClickHouse compilation of :class:`Median` takes it (mean of the two middle values)."""
    median: ColumnElement[Any] = null()
    if view.median_available:
        median = _middle(func.arraySort(func.groupArrayArray(g.c.g_waits)))
    return [
        func.sum(g.c.g_replies),
        func.uniqExactMerge(g.c.g_senders),
        func.uniqExactIfMerge(g.c.g_stop_senders),
        func.sum(g.c.g_stops),
        func.sum(g.c.g_multipart),
        func.sum(g.c.g_incomplete),
        median,
    ]


def campaign_stats(
    reader: Reader, *, tz: Any = UTC, name: str | None = None
) -> list[CampaignStats]:
    """Figures of each declared campaign (or of ``name``) over its own whole window."""
    rows = _campaign_rows(reader, name)
    if name is not None and not rows:
        raise UnknownCampaignError(name)
    view = StoreView(reader)
    figures: dict[str, Stats] = {}
    if rows and view.has_replies:
        figures = _figures(view, name)
    result = []
    for row in rows:
        campaign = _campaign(row, tz)
        stats = figures.get(campaign.name, EMPTY_STATS)
        delivered = campaign.delivered
        result.append(
            CampaignStats(
                campaign=campaign,
                stats=stats,
                reply_rate=share(stats.senders, delivered) if delivered else None,
                opt_out_rate=share(stats.stop_senders, delivered) if delivered else None,
            )
        )
    return result
