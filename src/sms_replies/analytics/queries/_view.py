"""What one reader's store holds: the ``replies`` and ``campaigns`` tables, their
columns, and the declared campaigns' windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.sql.selectable import TableClause

from sms_replies.schema import TABLE
from sms_replies.stores.readers import Reader

CAMPAIGNS_TABLE: Final = "campaigns"

LAST_PART_COLUMN: Final = "last_part_at"

CAMPAIGN_COLUMN: Final = "campaign"


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
