"""Synthetic ``replies`` and ``campaigns`` for the store scale benchmark (numpy + Arrow, fast).

Realistic enough for the query plans to be those of production:

- ``received_at`` spans :data:`DAYS` days ending at :data:`END`, rows in arrival
  order (as the sinks append them) with a daily curve (few replies at night);
- about :data:`SENDERS` distinct senders, a few of them very active (skewed);
- four long numbers (85 % of replies) and the short number (``recipient`` null);
- 3 % STOPs (text or provider), 10 % long replies of 2-4 parts, 2 % of those
  incomplete; a third of the replies carry a ``campaign`` from their callback URL;
- ``reply_id`` 32 random hex digits, like the product's blake2b ids.

Rows come as Arrow tables in the order and types of :data:`sms_replies.schema.COLUMNS`,
chunk by chunk, so a 10 M row load never holds more than one chunk.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sms_replies.schema import COLUMNS

DAYS: Final = 35
END: Final = datetime(2026, 11, 30, tzinfo=UTC)
START: Final = END - timedelta(days=DAYS)
SENDERS: Final = 50_000
RECIPIENTS: Final = ("+33756781234", "+33756781235", "+33644556677", "+33186950000")
STOP_SHARE: Final = 0.03
LONG_SHARE: Final = 0.10
SHORT_NUMBER_SHARE: Final = 0.15
CAMPAIGN_SHARE: Final = 0.33
CHUNK: Final = 1_000_000
_NULL: Final = pa.scalar(None, pa.string())

_WORDS: Final = (
    *("oui", "non", "merci", "bonjour", "rappelez", "moi", "demain", "vendredi", "je"),
    *("suis", "interesse", "pas", "maintenant", "plus", "tard", "ok", "daccord", "info"),
    *("prix", "rdv", "lundi", "matin", "soir", "svp"),
)
_STOP_TEXTS: Final = ("STOP", "stop", "Stop merci", "STOP SMS", "stop svp", "Arret")
_ARROW_TYPES: Final[dict[str, pa.DataType]] = {
    "text": pa.string(),
    "boolean": pa.bool_(),
    "integer": pa.int32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "text[]": pa.list_(pa.string()),
}
ARROW_SCHEMA: Final = pa.schema(
    [pa.field(c.name, _ARROW_TYPES[c.type], nullable=c.nullable) for c in COLUMNS]
)


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    channel: str
    recipient: str | None
    start: datetime
    end: datetime
    delivered: int


def campaigns(rows: int) -> list[Campaign]:
    """Twenty campaigns of 2-4 days over the span, most on a long number; deliveries scale."""
    rng = np.random.default_rng(11)
    out = []
    for index in range(20):
        start = START + timedelta(hours=int(rng.integers(0, (DAYS - 4) * 24)))
        short = index % 5 == 4
        out.append(
            Campaign(
                name=f"campaign-{index:02d}",
                channel="short_number" if short else "long_number",
                recipient=None if short else RECIPIENTS[index % len(RECIPIENTS)],
                start=start,
                end=start + timedelta(days=int(rng.integers(2, 5))),
                delivered=max(1000, rows // 10),
            )
        )
    return out


def sender_of(index: int) -> str:
    """The sender number of pool index ``index`` (the search benchmark looks one up)."""
    return f"+336{(index * 7919 + 1_234_567) % 10**8:08d}"


def busiest_sender() -> str:
    return sender_of(0)


def _hex_ids(rng: np.random.Generator, n: int, width: int) -> pa.Array:
    """``n`` random hex strings of ``width`` digits (Arrow string array, no Python loop)."""
    raw = rng.bytes(n * width // 2)
    data = binascii.hexlify(raw)
    offsets = np.arange(0, n * width + 1, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _text_pool(rng: np.random.Generator, count: int, length: int) -> list[str]:
    pool = []
    for _ in range(count):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < length:
            words.append(str(rng.choice(_WORDS)))
        text = " ".join(words)[:length]
        pool.append(text[0].upper() + text[1:])
    return pool


def _keyword(text: str) -> str:
    return text.split(" ", 1)[0].upper()


class Generator:
    """``rows`` replies in chunks of :data:`CHUNK` (same seed, same rows)."""

    def __init__(self, rows: int, *, seed: int = 7) -> None:
        self.rows = rows
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.senders = pa.array([sender_of(i) for i in range(SENDERS)], pa.string())
        short = _text_pool(rng, 400, 30)
        long_ = [t for n in (2, 3, 4) for t in _text_pool(rng, 100, 153 * (n - 1) + 40)]
        self.short_texts = pa.array(short + list(_STOP_TEXTS), pa.string())
        self.short_keywords = pa.array([_keyword(t) for t in short + list(_STOP_TEXTS)])
        self.long_texts = pa.array(long_, pa.string())
        self.long_keywords = pa.array([_keyword(t) for t in long_])
        self.recipients = pa.array(RECIPIENTS, pa.string())
        self.campaign_names = pa.array([c.name for c in campaigns(rows)], pa.string())

    def chunks(self, size: int = CHUNK) -> Iterator[pa.Table]:
        for first in range(0, self.rows, size):
            yield self.chunk(first, min(size, self.rows - first))

    def chunk(self, first: int, n: int) -> pa.Table:
        rng = np.random.default_rng((self.seed, first))
        span_us = DAYS * 86_400 * 1_000_000
        # Arrival order with a daily curve: each row's position maps to a time whose
        # hour of day follows the curve (weights per hour, few at night).
        position = (first + np.arange(n, dtype=np.float64)) / self.rows
        day = np.floor(position * DAYS)
        within = position * DAYS - day
        hourly = np.array(
            [1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 13, 12, 12, 13, 14, 14, 14, 13, 11, 8, 5, 3, 2],
            dtype=np.float64,
        )
        cdf = np.concatenate(([0.0], np.cumsum(hourly) / hourly.sum()))
        hour_frac = np.interp(within, cdf, np.arange(25, dtype=np.float64) / 24)
        received_us = (
            int(START.timestamp() * 1_000_000)
            + ((day + hour_frac) / DAYS * span_us).astype(np.int64)
            + rng.integers(0, 2_000_000, n)
        )
        received_us -= received_us % 1000  # the ingress keeps milliseconds
        received_us.sort()

        is_stop = rng.random(n) < STOP_SHARE
        is_long = ~is_stop & (rng.random(n) < LONG_SHARE / (1 - STOP_SHARE))
        parts_expected = np.where(is_long, rng.integers(2, 5, n), 1).astype(np.int32)
        incomplete = is_long & (rng.random(n) < 0.02)
        parts_received = (parts_expected - incomplete).astype(np.int32)

        short_number = rng.random(n) < SHORT_NUMBER_SHARE
        recipient_idx = rng.integers(0, len(RECIPIENTS), n)
        recipient = pc.if_else(
            pa.array(short_number),
            _NULL,
            self.recipients.take(pa.array(recipient_idx)),
        )

        # Skewed senders: u^1.5 makes the busiest one send 0.07 % of all replies (7,000
        # of 10 M), the median one about 150.
        sender_idx = (rng.random(n) ** 1.5 * SENDERS).astype(np.int64)
        sender = self.senders.take(pa.array(sender_idx))

        short_idx = rng.integers(0, len(self.short_texts) - len(_STOP_TEXTS), n)
        short_idx = np.where(
            is_stop, len(self.short_texts) - len(_STOP_TEXTS) + rng.integers(0, 6, n), short_idx
        )
        long_idx = (parts_expected.clip(2, 4) - 2) * 100 + rng.integers(0, 100, n)
        text = pc.if_else(
            pa.array(is_long),
            self.long_texts.take(pa.array(long_idx)),
            self.short_texts.take(pa.array(short_idx)),
        )
        keyword = pc.if_else(
            pa.array(is_long),
            self.long_keywords.take(pa.array(long_idx)),
            self.short_keywords.take(pa.array(short_idx)),
        )
        keyword = pc.if_else(pa.array(is_stop), pa.scalar("STOP"), keyword)
        provider_stop = is_stop & (rng.random(n) < 0.5)
        stop_source = pc.if_else(
            pa.array(is_stop), pc.if_else(pa.array(provider_stop), "provider", "text"), _NULL
        )

        assembly_us = np.where(is_long, (parts_expected - 1) * rng.integers(1, 20, n), 0) * 10**6
        ids = _hex_ids(rng, int(parts_received.sum()), 20)
        offsets = np.concatenate(([0], np.cumsum(parts_received))).astype(np.int32)
        provider_ids = pa.ListArray.from_arrays(pa.array(offsets), ids)

        in_campaign = rng.random(n) < CAMPAIGN_SHARE
        campaign_idx = rng.integers(0, len(self.campaign_names), n)
        campaign = pc.if_else(
            pa.array(in_campaign),
            self.campaign_names.take(pa.array(campaign_idx)),
            _NULL,
        )
        tag_choice = rng.random(n)
        tag = pc.if_else(
            pa.array(tag_choice < 0.1), "a", pc.if_else(pa.array(tag_choice < 0.15), "b", _NULL)
        )

        ts = pa.timestamp("us", tz="UTC")
        columns: dict[str, Any] = {
            "reply_id": _hex_ids(rng, n, 32),
            "channel": pa.array(np.where(short_number, "short_number", "long_number")),
            "sender": sender,
            "recipient": recipient,
            "text": text,
            "keyword": keyword,
            "is_stop": pa.array(is_stop),
            "stop_source": stop_source,
            "parts_expected": pa.array(parts_expected),
            "parts_received": pa.array(parts_received),
            "complete": pa.array(~incomplete),
            "received_at": pa.array(received_us, ts),
            "ingested_at": pa.array(received_us + rng.integers(200_000, 3_000_000, n), ts),
            "provider_message_ids": provider_ids,
            "last_part_at": pa.array(received_us + assembly_us, ts),
            "late": pa.array(np.zeros(n, dtype=bool)),
            "provider_sent_at": pa.array(received_us - 2_000_000, ts),
            "campaign": campaign,
            "tag": tag,
        }
        arrays = [columns[f.name].cast(f.type) for f in ARROW_SCHEMA]
        return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)
