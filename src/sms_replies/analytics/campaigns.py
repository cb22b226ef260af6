"""Campaigns: named windows of replies, declared by analysts, in the ``campaigns`` table.

A reply whose ``campaign`` column is set (it came through a per-campaign
callback URL, ``...&campaign=spring-A``) belongs to the declared campaign of
that name, whatever its time. Any other reply belongs to a campaign when it
was received in the campaign's [start, end) and, for a long-number campaign,
it was sent to the campaign's recipient number; for a short-number campaign,
it came through the short number. Rates use the campaign's delivered count when it is known:

- ``reply_rate``: distinct senders who replied / delivered messages;
- ``opt_out_rate``: distinct senders who sent a STOP / delivered messages.

Declaring writes through the DuckDB sink while it owns the store, else takes
the file's write lock for a few milliseconds (see :mod:`sms_replies.analytics.store`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import duckdb

from sms_replies.analytics.params import InvalidQueryError, UnknownCampaignError
from sms_replies.analytics.queries import Stats, membership_sql, row_stats, share, stats_sql
from sms_replies.analytics.store import CAMPAIGNS_TABLE, DEFAULT_TIMEOUT, open_writer
from sms_replies.errors import SmsRepliesError
from sms_replies.phone import DEFAULT_REGION, NotAPhoneNumber, to_e164
from sms_replies.records import Channel
from sms_replies.schema import TABLE

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


def declare_campaign(
    path: Path, campaign: Campaign, *, replace: bool = False, timeout: float = DEFAULT_TIMEOUT
) -> Campaign:
    """Store ``campaign`` (creating the store if needed); :class:`CampaignExistsError` unless
    ``replace``. Retries for ``timeout`` seconds while the sink holds the lock."""
    created = datetime.now(UTC)
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    with open_writer(path, timeout=timeout) as con:
        try:
            con.execute(
                f"{verb} INTO {CAMPAIGNS_TABLE} "
                "(name, channel, recipient, start_at, end_at, delivered, created_at) "
                "VALUES ($name, $channel, $recipient, $start, $end, $delivered, $created)",
                {
                    "name": campaign.name,
                    "channel": campaign.channel,
                    "recipient": campaign.recipient,
                    "start": campaign.start,
                    "end": campaign.end,
                    "delivered": campaign.delivered,
                    "created": created,
                },
            )
        except duckdb.ConstraintException:
            raise CampaignExistsError(campaign.name) from None
    return dataclasses.replace(campaign, created_at=created)


def delete_campaign(path: Path, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Forget a campaign (its replies stay); :class:`UnknownCampaignError` if not declared."""
    if not path.exists():
        raise UnknownCampaignError(name)
    with open_writer(path, timeout=timeout) as con:
        row = con.execute(
            f"DELETE FROM {CAMPAIGNS_TABLE} WHERE name = $name RETURNING name", {"name": name}
        ).fetchall()
    if not row:
        raise UnknownCampaignError(name)


_SELECT = "c.name, c.channel, c.recipient, c.start_at, c.end_at, c.delivered, c.created_at"


def _campaign(row: tuple[Any, ...], tz: Any) -> Campaign:
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


def list_campaigns(con: duckdb.DuckDBPyConnection, *, tz: Any = UTC) -> list[Campaign]:
    """Declared campaigns, most recent start first; times in zone ``tz`` (a tzinfo)."""
    rows = con.execute(
        f"SELECT {_SELECT} FROM {CAMPAIGNS_TABLE} c ORDER BY c.start_at DESC, c.name"
    ).fetchall()
    return [_campaign(row, tz) for row in rows]


def campaign_stats(
    con: duckdb.DuckDBPyConnection, *, tz: Any = UTC, name: str | None = None
) -> list[CampaignStats]:
    """Figures of each campaign (or of ``name``) over its own whole window."""
    params: dict[str, Any] = {}
    where = ""
    if name is not None:
        where = "WHERE c.name = $name"
        params["name"] = name
    rows = con.execute(
        f"SELECT {_SELECT}, {stats_sql(con)} FROM {CAMPAIGNS_TABLE} c "
        f"LEFT JOIN {TABLE} r ON {membership_sql(con)} {where} "
        "GROUP BY ALL ORDER BY c.start_at DESC, c.name",
        params,
    ).fetchall()
    if name is not None and not rows:
        raise UnknownCampaignError(name)
    result = []
    for row in rows:
        campaign = _campaign(row[:7], tz)
        stats = row_stats(row[7:])
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
