"""The ingress over real HTTP against a real broker: acks, outages, rejects, limits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import EmbeddedBroker
from sms_replies.ingest.app import CALLBACK_PATH, create_app
from sms_replies.records import ExpiryTick, RawGroup, RawPart, decode_raw
from sms_replies.settings import Settings
from tests.integration.conftest import consume

pytestmark = pytest.mark.integration

CALLBACK = {"msisdn": "33612345678", "to": "33756781234", "messageId": "m-1", "text": "Oui"}


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    await ensure_topics(settings.bootstrap, settings.topics, partitions=settings.topic_partitions)
    async with TestClient(TestServer(create_app(settings))) as test_client:
        yield test_client


from aiohttp import web  # noqa: E402  (only for the fixture's type)


async def test_accepted_callback_is_on_the_raw_topic_with_its_key(
    client: TestClient[web.Request, web.Application], settings: Settings
) -> None:
    part = {
        **CALLBACK,
        "concat": "true",
        "concat-ref": "9",
        "concat-total": "2",
        "concat-part": "2",
    }
    response = await client.post(CALLBACK_PATH, data=part)
    assert response.status == 200
    assert await response.json() == {"status": "accepted"}
    [value] = await consume(settings.bootstrap, settings.topics.raw, 1)
    record = RawPart.decode(value)
    assert record.provider_message_id == "m-1"
    assert record.partition_key == b"+33756781234|+33612345678|9|2"


async def test_bad_input_gets_400_and_is_kept_for_audit(
    client: TestClient[web.Request, web.Application], settings: Settings
) -> None:
    response = await client.post(CALLBACK_PATH, json={"msisdn": "33612345678"})
    assert response.status == 400
    body = await response.json()
    assert body["error"] == "invalid callback"
    assert set(body["problems"]) == {"to", "messageId"}
    [audit] = await consume(settings.bootstrap, settings.topics.rejects, 1)
    kept = orjson.loads(audit)
    assert kept["status"] == 400
    assert kept["problems"] == body["problems"]
    assert '"msisdn"' in kept["body"]


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Content-Type": "text/plain"}, b"msisdn=1", 415),
        ({"Content-Type": "application/json"}, b"{not json", 400),
        ({"Content-Type": "application/json"}, b"[1, 2]", 400),
        ({"Content-Type": "application/json"}, b'{"text": "' + b"x" * 70_000 + b'"}', 413),
    ],
)
async def test_malformed_requests_get_a_clear_4xx(
    client: TestClient[web.Request, web.Application],
    headers: dict[str, str],
    body: bytes,
    status: int,
) -> None:
    response = await client.post(CALLBACK_PATH, data=body, headers=headers)
    assert response.status == status
    payload = await response.json()
    assert "error" in payload
    assert "Traceback" not in await response.text()


async def test_token_is_required_when_configured(
    broker: EmbeddedBroker, settings: Settings
) -> None:
    secured = Settings.load(**{**settings.model_dump(), "callback_token": "s3cret-token"})
    await ensure_topics(secured.bootstrap, secured.topics, partitions=1)
    async with TestClient(TestServer(create_app(secured))) as client:
        assert (await client.get(CALLBACK_PATH, params=CALLBACK)).status == 401
        wrong = {**CALLBACK, "token": "guess"}
        assert (await client.get(CALLBACK_PATH, params=wrong)).status == 401
        right = {**CALLBACK, "token": "s3cret-token"}
        assert (await client.get(CALLBACK_PATH, params=right)).status == 200
    audits = [orjson.loads(v) for v in await consume(secured.bootstrap, secured.topics.rejects, 2)]
    assert [a["status"] for a in audits] == [401, 401]
    assert all("token" not in a["query"] for a in audits)


async def test_broker_outage_gives_503_then_recovers_without_restart(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    own = EmbeddedBroker()
    own.start()
    settings = Settings.load(
        kafka_bootstrap=own.bootstrap,
        topic_prefix=f"outage-{uuid.uuid4().hex[:6]}",
        publish_timeout=1.5,
        data_dir=tmp_path_factory.mktemp("outage"),
    )
    try:
        await ensure_topics(settings.bootstrap, settings.topics, partitions=2)
        async with TestClient(TestServer(create_app(settings))) as client:
            assert (await client.get(CALLBACK_PATH, params=CALLBACK)).status == 200
            own.stop()
            down = await client.get(CALLBACK_PATH, params=CALLBACK)
            assert down.status == 503
            assert down.headers["Retry-After"] == "5"
            assert (await client.get("/readyz")).status in (200, 503)
            # The broker comes back on the same address (empty: memory storage).
            restarted = EmbeddedBroker(port=own.port)
            restarted.start()
            own = restarted
            await ensure_topics(settings.bootstrap, settings.topics, partitions=2)
            statuses = []
            for _ in range(40):  # the producer reconnects on its own
                statuses.append((await client.get(CALLBACK_PATH, params=CALLBACK)).status)
                if statuses[-1] == 200:
                    break
                await asyncio.sleep(0.5)
            assert statuses[-1] == 200, statuses
            assert set(statuses) <= {200, 503}
        # A 503 may still have been written (the ack was late, not missing): the
        # provider's retry is then a duplicate, which reply_id absorbs downstream.
        values = await consume(settings.bootstrap, settings.topics.raw, 1)
        assert {RawPart.decode(v).provider_message_id for v in values} == {"m-1"}
    finally:
        own.stop()


async def test_callbacks_accepted_together_travel_as_one_record_per_partition(
    client: TestClient[web.Request, web.Application], settings: Settings
) -> None:
    senders = [f"3361234{n:04d}" for n in range(40)]
    responses = await asyncio.gather(
        *(
            client.get(CALLBACK_PATH, params={**CALLBACK, "msisdn": s, "messageId": f"m-{s}"})
            for s in senders
        )
    )
    assert [r.status for r in responses] == [200] * len(senders)
    records = await _records(settings, settings.topics.raw, len(senders))
    parts = [
        (partition, part) for partition, value in records for part in _parts(decode_raw(value))
    ]
    assert sorted(p.sender for _, p in parts) == sorted(f"+{s}" for s in senders)
    # Fewer records than callbacks, each part on the partition its key gives alone.
    assert len(records) < len(senders)
    count = settings.topic_partitions
    assert all(partition == murmur2_partition(p.partition_key, count) for partition, p in parts)


def _parts(record: RawPart | RawGroup | ExpiryTick) -> tuple[RawPart, ...]:
    assert not isinstance(record, ExpiryTick)
    return record.parts if isinstance(record, RawGroup) else (record,)


def murmur2_partition(key: bytes, partitions: int) -> int:
    # aiokafka's own partitioner, not ours: where a client would put the part alone.
    return (aiokafka_murmur2(key) & 0x7FFFFFFF) % partitions


async def _records(settings: Settings, topic: str, parts: int) -> list[tuple[int, bytes]]:
    """(partition, value) of the topic's records until they hold ``parts`` parts."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[tuple[int, bytes]] = []
    try:
        async with asyncio.timeout(20):
            while sum(len(_parts(decode_raw(v))) for _, v in records) < parts:
                batch = await consumer.getmany(timeout_ms=200)
                records += [(r.partition, r.value) for rs in batch.values() for r in rs if r.value]
    finally:
        await consumer.stop()
    return records
