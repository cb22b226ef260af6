"""Validated parameters of the analytics queries, shared by the CLI and the API.

Timezone rule: the store keeps UTC instants. A time given without a zone
(``2025-03-01`` or ``2025-03-01T08:00``) is read as wall-clock time in the
query's zone (default Europe/Paris); a time with an offset or ``Z`` is taken
as is. Relative times (``30m``, ``24h``, ``7d``, ``2w``) count back from now.
Buckets (hour, day) are cut in the query's zone and shown with its offset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sms_replies.errors import SmsRepliesError
from sms_replies.settings import DEFAULT_ZONE

GroupBy = Literal["recipient", "channel", "campaign"]
Bucket = Literal["hour", "day"]

GROUP_BY_VALUES: Final[tuple[str, ...]] = get_args(GroupBy)
BUCKET_VALUES: Final[tuple[str, ...]] = get_args(Bucket)
DEFAULT_TZ: Final = DEFAULT_ZONE
DEFAULT_RANGE: Final = timedelta(days=7)
MAX_BUCKETS: Final = 10_000
MAX_TOP: Final = 100

_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS: Final = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

# The times the HTTP API accepts, exactly (its OpenAPI document states this pattern,
# and clients generated from it must never see a valid-looking time refused): a
# calendar date of 1900-2999, optionally with a time (minutes, seconds, up to 6
# decimals) and an offset, or a relative time bounded so that it stays in years
# Python and DuckDB both handle. [0-9], not \d: \d matches other scripts' digits.
_YEAR = "(?:19[0-9]{2}|2[0-9]{3})"
_LEAP_YEAR = "(?:(?:19|2[0-9])(?:0[48]|[2468][048]|[13579][26])|2[048]00)"
_DATE = (
    f"(?:{_YEAR}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    "|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    f"|{_LEAP_YEAR}-02-29)"
)
_CLOCK = "(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]{1,6})?)?"
_OFFSET = "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_AMOUNT = "(?:[0-9]{1,7}m|[0-9]{1,6}h|[0-9]{1,5}d|[0-9]{1,4}w)"
TIME_PATTERN: Final = f"^(?:{_DATE}(?:T{_CLOCK}{_OFFSET}?)?|{_AMOUNT})$"


class InvalidQueryError(SmsRepliesError, ValueError):
    """A parameter of an analytics query is invalid; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class UnknownCampaignError(SmsRepliesError, LookupError):
    """No campaign of that name is declared."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown campaign {name!r}")
        self.name = name


@cache
def known_zones() -> frozenset[str]:
    """The IANA zone names of this system (the API's OpenAPI document lists them)."""
    return frozenset(available_timezones())


def parse_zone(name: str, *, param: str = "tz") -> ZoneInfo:
    """The IANA zone ``name`` (one of :func:`known_zones`) or :class:`InvalidQueryError`."""
    try:
        if name not in known_zones():
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidQueryError(param, f"unknown time zone {name!r} (IANA name expected)") from None


def parse_time(
    value: str, *, tz: str, now: datetime | None = None, param: str = "time"
) -> datetime:
    """An aware datetime from ISO 8601 (date or date-time) or a relative ``<n>[mhdw]``."""
    text = value.strip()
    if not text:
        raise InvalidQueryError(param, "empty time")
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InvalidQueryError(
            param,
            f"{value!r} is neither an ISO 8601 date/date-time nor a relative time like 24h or 7d",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=parse_zone(tz))
    return parsed


def time_range(
    since: str | datetime | None,
    until: str | datetime | None,
    *,
    tz: str,
    now: datetime | None = None,
) -> tuple[datetime, datetime]:
    """[start, end) from optional bounds: until defaults to now, since to until - 7 days."""
    now = now or datetime.now(UTC)
    end = until if isinstance(until, datetime) else None
    if isinstance(until, str):
        end = parse_time(until, tz=tz, now=now, param="until")
    end = end or now
    start = since if isinstance(since, datetime) else None
    if isinstance(since, str):
        start = parse_time(since, tz=tz, now=now, param="since")
    start = start or end - DEFAULT_RANGE
    return start, end


def bucket_step(bucket: Bucket) -> timedelta:
    return timedelta(hours=1) if bucket == "hour" else timedelta(days=1)


def last_buckets_start(start: datetime, end: datetime, bucket: Bucket) -> datetime:
    """``start``, moved forward when [start, end) holds more than MAX_BUCKETS buckets."""
    return max(start, end - MAX_BUCKETS * bucket_step(bucket))


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """What to count: replies received in [start, end), seen in zone ``tz``.

    ``group_by`` splits the figures by recipient number, channel or campaign;
    ``bucket`` splits them in time (hours or days of ``tz``); ``campaign`` keeps
    the replies of one declared campaign only; ``top`` is the number of
    keywords listed.
    """

    start: datetime
    end: datetime
    tz: str = DEFAULT_TZ
    group_by: GroupBy | None = None
    bucket: Bucket | None = None
    campaign: str | None = None
    top: int = 10

    def __post_init__(self) -> None:
        for param, value in (("since", self.start), ("until", self.end)):
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise InvalidQueryError(param, "an aware datetime (with a zone) is required")
        if self.start > self.end:  # equal: an empty range, which counts nothing
            raise InvalidQueryError("since", "must be before until")
        parse_zone(self.tz)
        if self.group_by is not None and self.group_by not in GROUP_BY_VALUES:
            raise InvalidQueryError("group_by", f"one of {', '.join(GROUP_BY_VALUES)}")
        if self.bucket is not None and self.bucket not in BUCKET_VALUES:
            raise InvalidQueryError("bucket", f"one of {', '.join(BUCKET_VALUES)}")
        if (
            self.bucket is not None
            and (self.end - self.start) / bucket_step(self.bucket) > MAX_BUCKETS
        ):
            raise InvalidQueryError(
                "bucket", f"more than {MAX_BUCKETS} {self.bucket}s: shorten the range"
            )
        if self.campaign is not None and not self.campaign.strip():
            raise InvalidQueryError("campaign", "empty campaign name")
        if not 1 <= self.top <= MAX_TOP:
            raise InvalidQueryError("top", f"between 1 and {MAX_TOP}")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)
