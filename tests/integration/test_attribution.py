"""Campaign attribution and the provider's time through the real processes.

Ingress, worker and DuckDB sink as ``python -m sms_replies`` children over the
session's embedded broker: a long reply sent to a per-campaign callback URL
(``?campaign=spring-A&tag=…``), its parts in three encodings and out of order,
lands as one row with the URL's campaign and tag and the provider's
``message-timestamp`` as ``provider_sent_at``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from sms_replies.settings import Settings
from tests.integration.conftest import Processes, start_pipeline, wait_for_rows

pytestmark = pytest.mark.integration

CAMPAIGN = {"campaign": "spring-A", "tag": "wave-2 (J+1)"}


def part(number: int, text: str, timestamp: str) -> dict[str, Any]:
    return {
        "msisdn": "33612345678",
        "to": "33756781234",
        "messageId": f"02000000AT{number}",
        "concat": "true",
        "concat-ref": "42",
        "concat-total": "3",
        "concat-part": str(number),
        "text": text,
        "type": "text",
        "keyword": text.split()[0].upper(),
        "message-timestamp": timestamp,
    }


async def test_campaign_tag_and_provider_time_reach_the_store(
    settings: Settings, processes: Processes
) -> None:
    url = await start_pipeline(processes, settings)
    first = part(1, "Oui je viens ", "2026-03-09 16:00:30")
    second = part(2, "avec ma ", "2026-03-09 16:00:31")
    third = part(3, "soeur.", "2026-03-09 16:00:32")
    single = {
        "msisdn": "33698765432",
        "to": "33756781234",
        "messageId": "02000000AT9",
        "text": "Non",
        "type": "text",
    }
    async with aiohttp.ClientSession() as session:
        sends = [
            session.get(url, params={**CAMPAIGN, **third}),
            session.post(url, params=CAMPAIGN, json=first),
            session.post(url, params=CAMPAIGN, data=second),
            session.post(url, data=second, params=CAMPAIGN),  # the provider retries part 2
            session.post(url, json=single),  # the account's default URL: no campaign
        ]
        for request in sends:
            async with request as response:
                assert response.status == 200, await response.text()
        async with session.get(url, params={**single, "campaign": "x" * 65}) as response:
            assert response.status == 400
            assert "campaign" in (await response.json())["problems"]

        rows = await wait_for_rows(settings.duckdb_path, 2, timeout=90)
    by_text = {row["text"]: row for row in rows}
    assert sorted(by_text) == ["Non", "Oui je viens avec ma soeur."]
    long_reply = by_text["Oui je viens avec ma soeur."]
    assert long_reply["campaign"] == "spring-A"
    assert long_reply["tag"] == "wave-2 (J+1)"
    assert long_reply["parts_received"] == 3
    assert long_reply["provider_sent_at"] == datetime(2026, 3, 9, 16, 0, 30, tzinfo=UTC)
    assert long_reply["received_at"] > long_reply["provider_sent_at"]  # the ingress's clock
    plain = by_text["Non"]
    assert (plain["campaign"], plain["tag"], plain["provider_sent_at"]) == (None, None, None)
