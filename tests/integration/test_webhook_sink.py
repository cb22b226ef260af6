"""The webhook sink in the real `sms-replies sinks` process, on the real embedded broker,
POSTing to a real local receiver: signed, at least once with the same key, nothing lost."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from sms_replies.records import Reply
from sms_replies.settings import Settings
from sms_replies.sinks.testing import make_replies
from tests.integration.conftest import Processes, consume, wait_for_rows, wait_ready
from tests.integration.webhook_receiver import Fail, Hang, Receiver

pytestmark = pytest.mark.integration

SECRET = "whsec-integration-0123456789"
URL_TOKEN = "t0k3n-in-the-path"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(SECRET.encode(), path=f"/hooks/{URL_TOKEN}")
    receiver.start()
    yield receiver
    receiver.stop()


def start_sinks(
    processes: Processes, settings: Settings, receiver: Receiver, sinks: list[str], **env: str
) -> None:
    processes.settings = settings.model_copy(update={"sinks": sinks})
    processes.start(
        "sinks", SMS_REPLIES_WEBHOOK_URL=receiver.url, SMS_REPLIES_WEBHOOK_SECRET=SECRET, **env
    )


async def publish(settings: Settings, replies: list[Reply]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        for reply in replies:
            await producer.send_and_wait(
                settings.topics.replies, reply.encode(), key=reply.reply_id.encode()
            )
    finally:
        await producer.stop()


async def wait_until_stored(receiver: Receiver, ids: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ids <= set(receiver.stored):
        if time.monotonic() > deadline:
            missing = len(ids - set(receiver.stored))
            raise TimeoutError(f"{missing} of {len(ids)} replies never accepted by the receiver")
        await asyncio.sleep(0.1)


async def sinks_health(settings: Settings) -> dict[str, dict[str, object]]:
    url = f"http://{settings.sinks_web_host}:{settings.sinks_web_port}/healthz"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        health: dict[str, dict[str, object]] = await response.json()
        return health


def assert_logs_keep_secrets(log: str, replies: list[Reply]) -> None:
    assert SECRET not in log
    assert URL_TOKEN not in log
    assert not [r.sender for r in replies if r.sender in log or r.sender[1:] in log]


@pytest.mark.timeout(150)
async def test_callbacks_reach_the_receiver_signed_as_stored_in_duckdb(
    settings: Settings, processes: Processes, receiver: Receiver
) -> None:
    """Issue 14's check, through `make run`-style processes: ingress, worker, sinks."""
    processes.start("worker")
    start_sinks(processes, settings, receiver, ["duckdb", "webhook"])
    processes.start("ingest")
    base = f"http://{settings.http_host}:{settings.http_port}"
    await wait_ready(f"{base}/readyz")
    async with aiohttp.ClientSession() as session:
        for n in range(20):
            fields = {"msisdn": f"336{n:08d}", "to": "33756781234", "messageId": f"w{n}"}
            fields["text"] = "STOP" if n == 3 else f"Oui, réponse {n}"
            async with session.post(f"{base}/callbacks/smspartner", data=fields) as response:
                assert response.status == 200
    rows = await wait_for_rows(settings.duckdb_path, 20, timeout=90)
    await wait_until_stored(receiver, {r["reply_id"] for r in rows})
    assert receiver.deliveries
    assert all(d.signature_ok for d in receiver.deliveries)
    assert all(d.key for d in receiver.deliveries)
    for row in rows:
        item = receiver.stored[row["reply_id"]]
        assert (item["sender"], item["text"], item["is_stop"], item["keyword"]) == (
            row["sender"],
            row["text"],
            row["is_stop"],
            row["keyword"],
        )
        assert item["received_at"].replace("Z", "+00:00") == row["received_at"].isoformat()
    assert len(receiver.stored) == 20


@pytest.mark.timeout(150)
async def test_receiver_that_fails_then_recovers_gets_everything_with_the_same_keys(
    settings: Settings, processes: Processes, receiver: Receiver
) -> None:
    # 503 + Retry-After twice, then two requests left unanswered past the sink's timeout:
    # the third attempt of the first write hands back to the runner, which writes again.
    receiver.plan = [Fail(503, "1"), Fail(503, "1"), Hang(5.0), Hang(5.0)]
    replies = make_replies(40, prefix="recover")
    await publish(settings, replies)
    start_sinks(
        processes,
        settings,
        receiver,
        ["webhook"],
        SMS_REPLIES_WEBHOOK_TIMEOUT="0.5",
        SMS_REPLIES_WEBHOOK_MAX_ATTEMPTS="3",
        SMS_REPLIES_WEBHOOK_BACKOFF_INITIAL="0.1",
    )
    await wait_until_stored(receiver, {r.reply_id for r in replies}, timeout=90)

    deliveries = list(receiver.deliveries)
    failed = [d for d in deliveries if d.status != 200]
    assert [d.status for d in failed] == [503, 503, None, None]
    assert all(d.signature_ok for d in deliveries)
    for d in failed:  # each failed request is sent again later: same key, same replies
        later = [x for x in deliveries if x.at > d.at and x.key == d.key]
        assert later, f"request {d.key} never retried"
        assert all(x.reply_ids == d.reply_ids for x in later)
        assert any(x.status == 200 for x in later)
    # Retry-After: 1 was honoured before each retry of a 503
    for first, second in itertools.pairwise(deliveries):
        if first.status == 503 and second.key == first.key:
            assert second.at - first.at >= 0.9
    health = (await sinks_health(settings))["webhook"]
    assert health["dead_lettered"] == 0
    assert health["written"] == 40
    assert_logs_keep_secrets(processes.log("sinks"), replies)
    assert "503" in processes.log("sinks")  # the failures were logged, without secrets


@pytest.mark.timeout(150)
async def test_permanent_400_dead_letters_only_the_refused_reply(
    settings: Settings, processes: Processes, receiver: Receiver
) -> None:
    replies = make_replies(12, prefix="poison")
    refused = replies[5]
    receiver.refuse.add(refused.reply_id)
    await publish(settings, replies)
    start_sinks(processes, settings, receiver, ["webhook"])
    others = {r.reply_id for r in replies} - {refused.reply_id}
    await wait_until_stored(receiver, others)
    (letter,) = [
        orjson.loads(v)
        for v in await consume(settings.bootstrap, settings.topics.dead_letter, 1, timeout=60)
    ]
    assert letter["sink"] == "webhook"
    assert "HTTP 400" in letter["error"]
    assert Reply.decode(letter["record"].encode()).reply_id == refused.reply_id
    assert refused.reply_id not in receiver.stored
    assert set(receiver.stored) == others
    health = (await sinks_health(settings))["webhook"]
    assert health["dead_lettered"] == 1
    assert_logs_keep_secrets(processes.log("sinks"), replies)


@pytest.mark.timeout(150)
async def test_sinks_killed_while_the_receiver_is_down_lose_nothing(
    settings: Settings, processes: Processes, receiver: Receiver
) -> None:
    receiver.plan = [Fail(503)] * 1000  # down until the plan is cleared
    replies = make_replies(25, prefix="killed")
    await publish(settings, replies)
    fast = {"SMS_REPLIES_WEBHOOK_MAX_ATTEMPTS": "2", "SMS_REPLIES_WEBHOOK_BACKOFF_INITIAL": "0.1"}
    start_sinks(processes, settings, receiver, ["webhook"], **fast)
    for _ in range(600):
        if len(receiver.deliveries) >= 4:
            break
        await asyncio.sleep(0.1)
    assert len(receiver.deliveries) >= 4, "the sink never tried"
    processes.stop("sinks", signal.SIGKILL)
    receiver.plan.clear()
    start_sinks(processes, settings, receiver, ["webhook"], **fast)
    await wait_until_stored(receiver, {r.reply_id for r in replies}, timeout=90)
    assert all(d.signature_ok for d in receiver.deliveries)
    accepted_ids = {i for d in receiver.deliveries if d.status == 200 for i in d.reply_ids}
    assert accepted_ids == {r.reply_id for r in replies}
