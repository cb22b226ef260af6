"""The result records of the statistics (summary, time series, keywords), and their
plain form for JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


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
