"""With a pseudonymisation key, no sender number in clear anywhere the pipeline writes.

Real processes (ingress, Faust worker on RocksDB, DuckDB and Parquet sinks) on
the real embedded broker: single, long and short-number replies and rejected
requests carrying numbers; then every file under the data directory (bytes and
decoded), every record of every topic of the run (Faust's changelog included)
and every log line are searched for each number, in every format.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from sms_replies.analytics.api import create_api_app
from sms_replies.privacy import is_pseudonym, pseudonymize
from sms_replies.settings import Settings
from tests.integration.conftest import Processes, wait_for_rows, wait_ready
from tests.integration.privacy_search import (
    decoded_hits,
    file_hits,
    number_forms,
    topic_hits,
)

pytestmark = pytest.mark.integration

KEY = "integration-pseudonym-key"
TOKEN = "callback-token"
LONG = "33756781234"  # our own long number: not a subscriber's, kept in clear
SINGLE, LONG_REPLY, SHORT = "+33600000101", "+33600000102", "+33600000103"
REJECTED = ("+33600000104", "+33600000105", "+33600000106")
SENDERS = (SINGLE, LONG_REPLY, SHORT, *REJECTED)
NEEDLES = [form for number in SENDERS for form in number_forms(number)]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared per-test settings (conftest), with the parts this test needs."""
    return settings.model_copy(
        update={
            "sinks": ["duckdb", "parquet"],
            "pseudonymize_key": SecretStr(KEY),
            "callback_token": SecretStr(TOKEN),
        }
    )


async def send(session: aiohttp.ClientSession, url: str, how: str, fields: dict[str, Any]) -> int:
    token = {"token": TOKEN}
    if how == "get":
        response = await session.get(url, params={**token, **fields})
    elif how == "form":
        response = await session.post(url, params=token, data=fields)
    else:
        response = await session.post(url, params=token, json=fields)
    async with response:
        return response.status


def unkeyed_reply_id(sender: str, recipient: str, ids: list[str]) -> str:
    """main's reply_id before the fix: anyone can test a guessed number against a row."""
    identity = ("long_number", sender, recipient, *ids)
    return hashlib.blake2b("\x1f".join(identity).encode(), digest_size=16).hexdigest()


async def test_no_number_in_clear_anywhere(
    processes: Processes, settings: Settings, tmp_path: Path
) -> None:
    processes.start("worker")
    # Uncompressed Parquet pages, so that the byte search can see into them too.
    processes.start("sinks", SMS_REPLIES_PARQUET_COMPRESSION="none")
    processes.start("ingest")
    base = f"http://{settings.http_host}:{settings.http_port}"
    await wait_ready(f"{base}/readyz")
    url = f"{base}/callbacks/smspartner"
    accepted = [
        ("get", {"msisdn": SINGLE[1:], "to": LONG, "messageId": "p-single", "text": "Oui"}),
        *(
            (
                how,
                {
                    "msisdn": LONG_REPLY,
                    "to": LONG,
                    "messageId": f"p-long-{n}",
                    "concat": "true",
                    "concat-ref": "42",
                    "concat-total": "2",
                    "concat-part": str(n),
                    "text": text,
                },
            )
            for how, n, text in (("form", 2, "vendredi."), ("json", 1, "Bonjour, je viens "))
        ),
        ("json", {"type": "stop", "phone_number": "0" + SHORT[3:], "text": "STOP"}),
    ]
    rejected = [
        # wrong token (401), a JSON body missing messageId (400), a form part beyond its
        # total (well-formed fields that make no callback: 422).
        ("get", {"token": "wrong", "msisdn": REJECTED[0][1:], "to": LONG, "messageId": "x"}),
        ("json", {"msisdn": "0" + REJECTED[1][3:], "to": LONG, "text": "hello"}),
        (
            "form",
            {
                "msisdn": REJECTED[2],
                "to": LONG,
                "messageId": "p-bad",
                "concat-ref": "1",
                "concat-total": "1",
                "concat-part": "2",
            },
        ),
    ]
    async with aiohttp.ClientSession() as session:
        assert [await send(session, url, how, f) for how, f in accepted] == [200] * 4
        statuses = []
        for how, fields in rejected:
            if "token" in fields:
                async with session.get(url, params=fields) as response:
                    statuses.append(response.status)
            else:
                statuses.append(await send(session, url, how, fields))
        assert statuses == [401, 400, 422]

    db = settings.data_dir / "replies.duckdb"
    rows = await wait_for_rows(db, 3)
    by_sender = {row["sender"]: row for row in rows}
    assert set(by_sender) == {pseudonymize(n, KEY.encode()) for n in (SINGLE, LONG_REPLY, SHORT)}
    assert all(is_pseudonym(s) for s in by_sender)
    long_row = by_sender[pseudonymize(LONG_REPLY, KEY.encode())]
    assert long_row["text"] == "Bonjour, je viens vendredi."
    assert by_sender[pseudonymize(SHORT, KEY.encode())]["is_stop"]  # opt-out still detected
    # The review's attack: a number guessed and checked against the row's reply_id.
    ids = list(long_row["provider_message_ids"])
    assert long_row["reply_id"] != unkeyed_reply_id(LONG_REPLY, "+" + LONG, ids)

    # Sender lookups take the number in any format and find its pseudonymised replies.
    api = TestClient(TestServer(create_api_app(db, pseudonymize_key=KEY.encode())))
    await api.start_server()
    try:
        for given in ("06 00 00 01 03", "33600000103", "+33600000103"):
            response = await api.get("/api/replies", params={"sender": given, "since": "1d"})
            assert response.status == 200
            items = (await response.json())["items"]
            assert [item["text"] for item in items] == ["STOP"], given
    finally:
        await api.close()

    topics = await topic_hits(settings.bootstrap, settings.topic_prefix, NEEDLES)
    processes.stop_all()  # stores closed and flushed: their files can be read
    assert topics == {}, "numbers in clear in these topics"
    assert file_hits(settings.data_dir, NEEDLES) == {}
    assert decoded_hits(settings.data_dir, NEEDLES) == {}
    assert file_hits(tmp_path, NEEDLES) == {}  # logs of every process included
