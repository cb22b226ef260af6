"""Poison records become data on the dead-letter topic; the streams go on."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from sms_replies.records import Concat, RawPart
from sms_replies.settings import Settings
from tests.integration.conftest import Processes, consume, wait_for_rows

pytestmark = pytest.mark.integration


async def dead_letters(settings: Settings, count: int) -> list[dict[str, str]]:
    values = await consume(settings.bootstrap, settings.topics.dead_letter, count, timeout=60)
    return [orjson.loads(value) for value in values]


@pytest.mark.timeout(120)
async def test_poison_in_raw_and_replies_topics_is_dead_lettered(
    settings: Settings, processes: Processes
) -> None:
    processes.start("worker")
    processes.start("sinks")
    good = RawPart(
        channel="long_number",
        sender="+33612345678",
        recipient="+33756781234",
        text="Oui",
        provider_message_id="g1",
        message_type="text",
        received_at_ms=1_764_000_000_000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.raw, b"\x00 not a record", key=b"k")
        await producer.send_and_wait(settings.topics.replies, b'{"v": 1, "nope": true}', key=b"r")
        await producer.send_and_wait(settings.topics.raw, good.encode(), key=good.partition_key)
    finally:
        await producer.stop()
    rows = await wait_for_rows(settings.duckdb_path, 1, timeout=90)
    assert [r["text"] for r in rows] == ["Oui"]
    letters = await dead_letters(settings, 2)
    by_stage = {letter.get("stage") or letter.get("sink"): letter for letter in letters}
    assert set(by_stage) == {"reassembly", "duckdb"}
    assert "not JSON" in by_stage["reassembly"]["error"]
    assert by_stage["duckdb"]["record"] == '{"v": 1, "nope": true}'


@pytest.mark.timeout(180)
async def test_hostile_long_parts_on_the_raw_topic_do_not_stop_the_worker(
    settings: Settings, processes: Processes
) -> None:
    """Review 2026-12: 95 parts of 2,000 control characters on one key (255 parts
    announced) grew its state past the 1 MB record limit: the worker exited, again
    and again. Written straight to the raw topic here, past the ingress's own bounds."""
    processes.start("worker")
    processes.start("sinks")

    def part(number: int, text: str, total: int, message_id: str) -> RawPart:
        return RawPart(
            channel="long_number",
            sender="+33612345678",
            recipient="+33756781234",
            text=text,
            provider_message_id=message_id,
            message_type="text",
            received_at_ms=1_764_000_000_000,
            concat=Concat(ref=9, total=total, part=number),
        )

    hostile = [part(n, "\x01" * 2000, 255, f"h{n}") for n in range(1, 96)]
    after = [part(n, f"<{n}>", 2, f"a{n}") for n in (1, 2)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        for record in (*hostile, *after):
            await producer.send_and_wait(
                settings.topics.raw, record.encode(), key=record.partition_key
            )
    finally:
        await producer.stop()
    rows = await wait_for_rows(settings.duckdb_path, 1, timeout=120)
    assert [r["text"] for r in rows] == ["<1><2>"]
    letters = await dead_letters(settings, len(hostile))
    assert len(letters) == len(hostile)
    assert all("text of 2000 characters" in letter["error"] for letter in letters)
    assert processes.children["worker"].poll() is None
