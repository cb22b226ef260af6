"""The whole pipeline over real connections: HTTP ingress -> embedded broker -> Faust
worker (RocksDB) -> DuckDB sink, every callback shape and encoding."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from sms_replies.settings import Settings
from tests.integration.conftest import (
    Processes,
    read_rows,
    start_pipeline,
    wait_for_rows,
)

pytestmark = pytest.mark.integration

LONG = "33756781234"  # the rented long number, as the provider sends it
ALICE, BOB, CAROL = "33612345678", "33698765432", "+33611111111"


def callbacks() -> list[tuple[str, dict[str, Any]]]:
    """(encoding, fields) of one campaign's replies, long parts shuffled, one duplicate."""
    long_part = {"msisdn": ALICE, "to": LONG, "concat": "true", "concat-ref": "171"}
    return [
        (
            "get",
            {
                "msisdn": ALICE,
                "to": LONG,
                "messageId": "0200000A1",
                "text": "Oui",
                "type": "text",
                "keyword": "OUI",
                "message-timestamp": "2016-03-10 09:51:46",
            },
        ),
        (
            "form",
            {"msisdn": BOB, "to": LONG, "messageId": "0200000B1", "text": "Stop.", "type": "text"},
        ),
        (
            "json",
            {
                "msisdn": 33698765432,
                "to": int(LONG),
                "messageId": 200000002,
                "text": "Non, désolé",
                "type": "text",
            },
        ),
        # A three-part reply from Alice: 3, 1, 2 in three encodings, part 1 twice.
        (
            "get",
            {
                **long_part,
                "messageId": "0200000A4",
                "concat-total": "3",
                "concat-part": "3",
                "text": "vendredi.",
            },
        ),
        (
            "json",
            {
                **long_part,
                "messageId": "0200000A2",
                "concat-total": 3,
                "concat-part": 1,
                "text": "Bonjour, je serai ",
            },
        ),
        (
            "form",
            {
                **long_part,
                "messageId": "0200000A3",
                "concat-total": "3",
                "concat-part": "2",
                "text": "là ",
            },
        ),
        (
            "form",
            {
                **long_part,
                "messageId": "0200000A2",
                "concat-total": "3",
                "concat-part": "1",
                "text": "Bonjour, je serai ",
            },
        ),
        # Bob reuses concat-ref 171 with the same total: must not mix with Alice.
        (
            "json",
            {
                "msisdn": BOB,
                "to": LONG,
                "concat": "true",
                "concat-ref": "171",
                "concat-total": "3",
                "concat-part": "1",
                "messageId": "0200000B2",
                "text": "ARRET ",
            },
        ),
        (
            "json",
            {
                "msisdn": BOB,
                "to": LONG,
                "concat": "true",
                "concat-ref": "171",
                "concat-total": "3",
                "concat-part": "3",
                "messageId": "0200000B4",
                "text": "messages",
            },
        ),
        (
            "get",
            {
                "msisdn": BOB,
                "to": LONG,
                "concat": "true",
                "concat-ref": "171",
                "concat-total": "3",
                "concat-part": "2",
                "messageId": "0200000B3",
                "text": "de tous ces ",
            },
        ),
        # Short number: a reply and a STOP (numeric and string message ids).
        (
            "json",
            {"type": "response", "phone_number": CAROL, "text": "Ma réponse", "message_id": 123},
        ),
        ("json", {"type": "stop", "phone_number": "+33622222222", "text": "", "message_id": "123"}),
        (
            "form",
            {
                "type": "response",
                "phone_number": "0633333333",
                "text": "info svp",
                "message_id": "124",
            },
        ),
    ]


EXPECTED = {
    # text: (channel, sender, recipient, keyword, is_stop, stop_source, expected, received, ids)
    "Oui": ("long_number", "+33612345678", "+33756781234", "OUI", False, None, 1, 1, ["0200000A1"]),
    "Stop.": (
        "long_number",
        "+33698765432",
        "+33756781234",
        "STOP",
        True,
        "text",
        1,
        1,
        ["0200000B1"],
    ),
    "Non, désolé": (
        "long_number",
        "+33698765432",
        "+33756781234",
        "NON",
        False,
        None,
        1,
        1,
        ["200000002"],
    ),
    "Bonjour, je serai là vendredi.": (
        "long_number",
        "+33612345678",
        "+33756781234",
        "BONJOUR",
        False,
        None,
        3,
        3,
        ["0200000A2", "0200000A3", "0200000A4"],
    ),
    "ARRET de tous ces messages": (
        "long_number",
        "+33698765432",
        "+33756781234",
        "ARRET",
        True,
        "text",
        3,
        3,
        ["0200000B2", "0200000B3", "0200000B4"],
    ),
    "Ma réponse": ("short_number", "+33611111111", None, "MA", False, None, 1, 1, ["123"]),
    "": ("short_number", "+33622222222", None, "", True, "provider", 1, 1, ["123"]),
    "info svp": ("short_number", "+33633333333", None, "INFO", False, None, 1, 1, ["124"]),
}


async def send(
    session: aiohttp.ClientSession, url: str, encoding: str, fields: dict[str, Any]
) -> aiohttp.ClientResponse:
    if encoding == "get":
        return await session.get(url, params={k: str(v) for k, v in fields.items()})
    if encoding == "form":
        return await session.post(url, data={k: str(v) for k, v in fields.items()})
    return await session.post(url, json=fields)


async def test_every_shape_and_encoding_lands_once_in_duckdb(
    settings: Settings, processes: Processes
) -> None:
    url = await start_pipeline(processes, settings)
    now = datetime.now(UTC)
    started = now.replace(microsecond=now.microsecond // 1000 * 1000)  # stored at ms precision
    async with aiohttp.ClientSession() as session:
        for encoding, fields in callbacks():
            async with await send(session, url, encoding, fields) as response:
                assert response.status == 200, await response.text()
        async with await send(session, url, "form", {"msisdn": "33xx"}) as response:
            assert response.status == 400

        rows = await wait_for_rows(settings.duckdb_path, len(EXPECTED), timeout=90)
        got = {
            r["text"]: (
                r["channel"],
                r["sender"],
                r["recipient"],
                r["keyword"],
                r["is_stop"],
                r["stop_source"],
                r["parts_expected"],
                r["parts_received"],
                r["provider_message_ids"],
            )
            for r in rows
        }
        assert got == EXPECTED
        assert all(r["complete"] for r in rows)
        assert all(re.fullmatch(r"[0-9a-f]{32}", r["reply_id"]) for r in rows)
        assert all(started <= r["received_at"] <= r["ingested_at"] for r in rows)

        # The provider delivers again (every callback, other encodings): no new row.
        for encoding, fields in callbacks():
            other = {"get": "json", "json": "form", "form": "get"}[encoding]
            async with await send(session, url, other, fields) as response:
                assert response.status == 200
    await asyncio.sleep(3)  # several sink batches
    assert len(read_rows(settings.duckdb_path)) == len(EXPECTED)
