"""Time buckets (hour, day) in a zone: the zone's offsets over a range, each row's
bucket in SQL, and the same rule in Python.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, bindparam, case
from sqlalchemy.types import Integer

from sms_replies.analytics.params import StatsQuery, local_midnight
from sms_replies.stores.dialects import BucketStart, EpochSeconds

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


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
