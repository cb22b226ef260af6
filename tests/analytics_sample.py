"""A small, fixed set of replies around the 2025 spring DST change in Paris.

Used by the analytics tests (which state the expected figures by hand) and
handy to try the dashboard: :func:`write_sample` loads it through the real
DuckDB sink. Times are UTC; Paris is UTC+1 until 2025-03-30 01:00 UTC, UTC+2 after.

===  ============  ===========  ============  =========  =====  =====  ====================  =====
id   sender        recipient    channel       keyword    stop   parts  received (UTC)        last
===  ============  ===========  ============  =========  =====  =====  ====================  =====
r1   +33600000001  +33700000001 long_number   OUI        no     1/1    2025-03-29 22:30      =
r2   +33600000002  +33700000001 long_number   STOP       text   1/1    2025-03-29 23:10      =
r3   +33600000001  +33700000001 long_number   NON        no     2/2    2025-03-30 00:05      +4.2
r4   +33600000003  +33700000002 long_number   OUI        no     2/3    2025-03-30 01:20      +11.8
r5   +33600000004  (short)      short_number  STOP       prov.  1/1    2025-03-30 08:00      =
r6   +33600000005  (short)      short_number  INFO       no     1/1    2025-03-30 09:00      =
r7   +33600000002  +33700000001 long_number   OUI        no     1/1    2025-03-30 09:30      =
r8   +33600000006  +33700000002 long_number   (empty)    no     1/1    2025-03-30 10:00      =
r9   +33600000007  +33700000001 long_number   OUI        no     2/2    2025-03-28 10:00      +30
===  ============  ===========  ============  =========  =====  =====  ====================  =====

``last``: seconds from the first to the last part received (``last_part_at``);
``=``: a single message, stored with ``last_part_at = received_at``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from sms_replies.records import Channel, Reply, StopSource
from sms_replies.sinks.duckdb import DuckDBSink

NUMBER_A = "+33700000001"
NUMBER_B = "+33700000002"


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def _reply(
    reply_id: str,
    sender: str,
    recipient: str | None,
    text: str,
    keyword: str,
    at: str,
    *,
    stop: StopSource | None = None,
    parts: tuple[int, int] = (1, 1),
    last_part_after_ms: int | None = None,
) -> Reply:
    received, expected = parts
    channel: Channel = "long_number" if recipient else "short_number"
    return Reply(
        reply_id=reply_id,
        channel=channel,
        sender=sender,
        recipient=recipient,
        text=text,
        keyword=keyword,
        is_stop=stop is not None,
        stop_source=stop,
        parts_expected=expected,
        parts_received=received,
        complete=received == expected,
        received_at_ms=_ms(at),
        provider_message_ids=tuple(f"{reply_id}-p{i}" for i in range(1, received + 1)),
        last_part_at_ms=None if last_part_after_ms is None else _ms(at) + last_part_after_ms,
    )


SAMPLE_REPLIES: tuple[Reply, ...] = (
    _reply("r1", "+33600000001", NUMBER_A, "Oui merci", "OUI", "2025-03-29T22:30:00"),
    _reply("r2", "+33600000002", NUMBER_A, "STOP", "STOP", "2025-03-29T23:10:00", stop="text"),
    _reply(
        "r3",
        "+33600000001",
        NUMBER_A,
        "Non " + "x" * 200,
        "NON",
        "2025-03-30T00:05:00",
        parts=(2, 2),
        last_part_after_ms=4_200,
    ),
    _reply(
        "r4",
        "+33600000003",
        NUMBER_B,
        "Oui mais",
        "OUI",
        "2025-03-30T01:20:00",
        parts=(2, 3),
        last_part_after_ms=11_800,
    ),
    _reply("r5", "+33600000004", None, "STOP", "STOP", "2025-03-30T08:00:00", stop="provider"),
    _reply("r6", "+33600000005", None, "Info svp", "INFO", "2025-03-30T09:00:00"),
    _reply("r7", "+33600000002", NUMBER_A, "oui", "OUI", "2025-03-30T09:30:00"),
    _reply("r8", "+33600000006", NUMBER_B, "", "", "2025-03-30T10:00:00"),
    _reply(
        "r9",
        "+33600000007",
        NUMBER_A,
        "OUI " + "y" * 200,
        "OUI",
        "2025-03-28T10:00:00",
        parts=(2, 2),
        last_part_after_ms=30_000,
    ),
)


async def write_sample_async(path: Path) -> None:
    """Write :data:`SAMPLE_REPLIES` with the DuckDB sink, in two batches, the second
    repeating r1 with another text (the store keeps the first)."""
    async with DuckDBSink(path, serve=False) as sink:
        await sink.write(SAMPLE_REPLIES[:5])
        duplicate = dataclasses.replace(SAMPLE_REPLIES[0], text="repeated delivery")
        await sink.write((*SAMPLE_REPLIES[5:], duplicate))


def write_sample(path: Path) -> None:
    asyncio.run(write_sample_async(path))
