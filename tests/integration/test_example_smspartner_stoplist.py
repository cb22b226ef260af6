"""The SMS Partner stop-list plugin (examples/smspartner-stoplist) in a `make run`-style pipeline.

Ingress, worker and sinks as real processes on the embedded broker; the plugin found
through its entry point and pushing to a real local server that speaks SMS Partner's
documented ``stop-sms/add`` (failing, then recovering). No test reaches the internet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import aiohttp
import orjson
import pytest

from sms_replies.records import Reply
from sms_replies.settings import Settings
from sms_replies.sinks import available_sinks, load_sink
from tests.integration.conftest import Processes, consume, wait_for_rows, wait_ready

if TYPE_CHECKING:  # imported in the tests: without the plugin they fail, collection does not
    from sms_replies_smspartner.testing import FakeSmsPartner

pytestmark = pytest.mark.integration

API_KEY = "sp-integration-key-0123456789"
STOPPED = "+33611111111"  # STOP in a text
SHORT = "+33622222222"  # short-number type: stop
INVALID = "+33633333333"  # the provider refuses it (code 9)
KEPT = "+33644444444"  # "Oui": stays off the list


def test_the_entry_point_is_discovered() -> None:
    assert "smspartner-stoplist" in available_sinks(), (
        "pip install -e examples/smspartner-stoplist (make does it)"
    )
    assert load_sink("smspartner-stoplist").__module__ == "sms_replies_smspartner.sink"


@pytest.fixture
def api() -> Iterator[FakeSmsPartner]:
    from sms_replies_smspartner.testing import FakeSmsPartner

    with FakeSmsPartner(api_key=API_KEY) as fake:
        yield fake


async def wait_for_numbers(api: FakeSmsPartner, numbers: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not numbers <= api.numbers():
        if time.monotonic() > deadline:
            raise TimeoutError(f"never listed: {len(numbers - api.numbers())} numbers")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(150)
async def test_stops_reach_the_stop_list_through_failures_and_a_refused_one_is_dead_lettered(
    settings: Settings, processes: Processes, api: FakeSmsPartner
) -> None:
    from sms_replies_smspartner.testing import Fail, Hang

    api.invalid.add(INVALID)
    api.plan = [Fail(503), Fail(429, retry_after="1"), Hang(3.0)]
    processes.settings = settings.model_copy(update={"sinks": ["duckdb", "smspartner-stoplist"]})
    env = {
        "SMS_REPLIES_SMSPARTNER_API_KEY": API_KEY,
        "SMS_REPLIES_SMSPARTNER_BASE_URL": api.base_url,
        "SMS_REPLIES_SMSPARTNER_TIMEOUT": "0.5",
        "SMS_REPLIES_SMSPARTNER_BACKOFF_INITIAL": "0.1",
    }
    for command in ("worker", "sinks", "ingest"):
        processes.start(command, **env)
    base = f"http://{settings.http_host}:{settings.http_port}"
    await wait_ready(f"{base}/readyz")
    url = f"{base}/callbacks/smspartner"
    long_number = {"to": "33756781234"}
    async with aiohttp.ClientSession() as session:
        for fields in (
            {"msisdn": STOPPED[1:], "messageId": "s1", "text": "STOP", **long_number},
            {"msisdn": KEPT[1:], "messageId": "k1", "text": "Oui", **long_number},
            {"msisdn": INVALID[1:], "messageId": "i1", "text": "stop merci", **long_number},
            {"msisdn": STOPPED[1:], "messageId": "s2", "text": "Stop.", **long_number},
        ):
            async with session.post(url, data=fields) as response:
                assert response.status == 200
        short = {"type": "stop", "phone_number": SHORT, "text": "", "message_id": 7}
        async with session.post(url, json=short) as response:
            assert response.status == 200

    rows = await wait_for_rows(settings.duckdb_path, 5, timeout=90)  # the other sink: all 5
    await wait_for_numbers(api, {STOPPED, SHORT})
    (letter,) = [
        orjson.loads(v)
        for v in await consume(settings.bootstrap, settings.topics.dead_letter, 1, timeout=60)
    ]
    assert letter["sink"] == "smspartner-stoplist"
    assert "code 9 (invalid phone number)" in letter["error"]
    refused = Reply.decode(letter["record"].encode())
    assert (refused.sender, refused.is_stop) == (INVALID, True)
    assert refused.reply_id in {row["reply_id"] for row in rows}

    assert api.numbers() == {STOPPED, SHORT}  # never KEPT, never INVALID
    statuses = [r.status for r in api.answered()]
    assert statuses[:3] == [503, 429, None]  # the plan: then it recovered
    log = processes.log("sinks")
    assert API_KEY not in log
    assert not [n for n in (STOPPED, SHORT, INVALID, KEPT) if n in log or n[1:] in log]
    assert "503" in log
