"""The tables as analysts see them, in every store: ``replies``, ``campaigns``, ``optouts``.

One column list per table, one description each; every sink maps the logical
types to its engine and builds its rows with :func:`to_columns` / :func:`to_row`.
The DDL of each store is generated from these lists (:mod:`sms_replies.stores.ddl`).
``docs/schema.md`` is written from them (a test keeps them in sync).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sms_replies.records import Reply

LogicalType = Literal["text", "boolean", "integer", "bigint", "timestamp", "text[]"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: LogicalType
    nullable: bool
    description: str


TABLE = "replies"

COLUMNS: tuple[Column, ...] = (
    Column("reply_id", "text", False, "Deterministic id from the provider ids; primary key."),
    Column("channel", "text", False, "'long_number' or 'short_number'."),
    Column(
        "sender",
        "text",
        False,
        "Phone number that replied, E.164 with '+'; 'h:' + its HMAC with a pseudonymisation key.",
    ),
    Column("recipient", "text", True, "Long number that received it (E.164); null: short number."),
    Column("text", "text", False, "The whole reply, parts joined in order."),
    Column("keyword", "text", False, "First word, uppercased, accents/punctuation stripped."),
    Column("is_stop", "boolean", False, "Opt-out: provider type 'stop' or a STOP-like text."),
    Column("stop_source", "text", True, "'provider' or 'text' when is_stop, else null."),
    Column("parts_expected", "integer", False, "Parts announced (concat-total; 1 if single)."),
    Column("parts_received", "integer", False, "Distinct parts received."),
    Column("complete", "boolean", False, "Every expected part was received."),
    Column("received_at", "timestamp", False, "UTC time the ingress accepted the first part."),
    Column("ingested_at", "timestamp", False, "UTC time the row was written to this store."),
    Column("provider_message_ids", "text[]", False, "Provider messageId of each part, in order."),
    Column("last_part_at", "timestamp", True, "UTC time the ingress accepted the last part."),
    Column("late", "boolean", True, "A part that came after its message expired, stored alone."),
    Column(
        "provider_sent_at",
        "timestamp",
        True,
        "Provider's message-timestamp (UTC) of the earliest part; null: not sent.",
    ),
    Column("campaign", "text", True, "The callback URL's campaign parameter; null: not given."),
    Column("tag", "text", True, "The callback URL's tag parameter; null: not given."),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)

CAMPAIGNS_TABLE = "campaigns"

#: Campaigns declared by analysts (``sms-replies campaign add``); primary key ``name``.
CAMPAIGN_COLUMNS: tuple[Column, ...] = (
    Column("name", "text", False, "Campaign name (1-200 printable characters); primary key."),
    Column("channel", "text", False, "'long_number' or 'short_number'."),
    Column("recipient", "text", True, "Long number the campaign was sent from; null: short."),
    Column("start_at", "timestamp", False, "Start of the campaign's reply window (UTC)."),
    Column("end_at", "timestamp", False, "End of the window, exclusive (UTC); after start_at."),
    Column("delivered", "bigint", True, "Messages delivered, for the rates; null: unknown."),
    Column("created_at", "timestamp", False, "UTC time the campaign was declared."),
)

OPTOUTS_TABLE = "optouts"

#: The opt-out list: one row per sender, the latest decision (see :mod:`sms_replies.optout`).
OPTOUT_COLUMNS: tuple[Column, ...] = (
    Column("sender", "text", False, "The sender, as in replies.sender (a pseudonym with a key)."),
    Column("status", "text", False, "'opted_out' or 'opted_in'."),
    Column("since", "timestamp", False, "received_at of the reply that decided it (UTC)."),
    Column("reply_id", "text", False, "The reply that decided it."),
    Column("source", "text", False, "'provider' or 'text' (opted out), 'keyword' (opted in)."),
)
OPTOUT_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in OPTOUT_COLUMNS)


def utc_from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# What building a row raises for a reply whose fields do not have their types or
# bounds (one constructed by hand, not decoded): data that can never be written.
ROW_ERRORS: tuple[type[Exception], ...] = (TypeError, ValueError, OverflowError, OSError)


def to_row(reply: Reply, ingested_at: datetime) -> tuple[Any, ...]:
    """One row, in :data:`COLUMNS` order."""
    return (
        reply.reply_id,
        reply.channel,
        reply.sender,
        reply.recipient,
        reply.text,
        reply.keyword,
        reply.is_stop,
        reply.stop_source,
        reply.parts_expected,
        reply.parts_received,
        reply.complete,
        utc_from_ms(reply.received_at_ms),
        ingested_at,
        list(reply.provider_message_ids),
        utc_from_ms(reply.last_part_at_ms or reply.received_at_ms),
        reply.late,
        None if reply.provider_sent_at_ms is None else utc_from_ms(reply.provider_sent_at_ms),
        reply.campaign,
        reply.tag,
    )


def unique_by_id(batch: Sequence[Reply]) -> list[Reply]:
    """The batch without repeated reply_ids (first wins), as stores reject in-batch repeats."""
    seen: set[str] = set()
    unique: list[Reply] = []
    for reply in batch:
        if reply.reply_id not in seen:
            seen.add(reply.reply_id)
            unique.append(reply)
    return unique


def to_columns(batch: Sequence[Reply], ingested_at: datetime) -> dict[str, list[Any]]:
    """The batch as columns (name -> values), for Arrow and other columnar loaders."""
    rows = [to_row(reply, ingested_at) for reply in batch]
    return {name: [row[i] for row in rows] for i, name in enumerate(COLUMN_NAMES)}
