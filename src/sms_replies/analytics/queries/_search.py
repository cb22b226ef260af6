"""The reply search: filtered reply rows, newest first, paged with a cursor or an offset."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, bindparam, or_, select

from sms_replies.analytics.params import DEFAULT_TZ, InvalidQueryError
from sms_replies.analytics.queries._buckets import _EPOCH, _from_epoch_us
from sms_replies.analytics.queries._membership import _campaign_filter, _check_campaign
from sms_replies.analytics.queries._view import StoreView
from sms_replies.schema import COLUMN_NAMES
from sms_replies.stores.dialects import BinaryOrder
from sms_replies.stores.readers import Reader

MAX_PAGE: Final = 1000

# A position in the newest-first order (the API's OpenAPI document states this pattern).
CURSOR_PATTERN: Final = r"^(?:0|[1-9][0-9]{0,17})\.[^\x00-\x1f\x7f]*$"

_CURSOR: Final = re.compile(CURSOR_PATTERN)


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
