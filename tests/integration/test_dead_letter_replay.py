"""``sms-replies dead-letters``: a dead-lettered reply, its cause fixed, replayed, stored once.

Real sinks process (PostgreSQL sink, the real server at 127.0.0.1:5432) on the
real embedded broker; the command runs as a user would run it. The cause: the
DBA made ``text`` a ``varchar(5)``, so a longer reply is refused for good
(SQLSTATE 22001) and dead-lettered; once the column is widened, the replay
stores it, and a second replay changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from sms_replies.settings import Settings
from sms_replies.sinks.postgres import ddl
from sms_replies.sinks.testing import make_reply
from tests.integration.conftest import Processes

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"dead_letters_{uuid.uuid4().hex[:10]}"
    con = await asyncpg.connect(DSN)
    try:
        await con.execute(f'CREATE SCHEMA "{name}"')
        await con.execute(ddl(name))
        await con.execute(f'ALTER TABLE "{name}".replies ALTER COLUMN text TYPE varchar(5)')
        yield name
    finally:
        await con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await con.close()


async def stored(schema: str) -> list[tuple[str, str]]:
    con = await asyncpg.connect(DSN)
    try:
        rows = await con.fetch(f'SELECT reply_id, text FROM "{schema}".replies ORDER BY 1')
        return [(r["reply_id"], r["text"]) for r in rows]
    finally:
        await con.close()


def dead_letters(settings: Settings, *args: str) -> str:
    env = {**os.environ, **settings.as_env()}
    done = subprocess.run(
        [sys.executable, "-m", "sms_replies", "dead-letters", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def listed(settings: Settings, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    for _ in range(int(timeout)):
        letters: list[dict[str, Any]] = orjson.loads(
            await asyncio.to_thread(dead_letters, settings, "list", "--format", "json")
        )
        if len(letters) >= count:
            return letters
        await asyncio.sleep(1.0)
    raise AssertionError(f"{count} dead letters expected, {letters}")


@pytest.mark.timeout(240)
async def test_dead_lettered_reply_replayed_after_the_fix_is_stored_once(
    settings: Settings, processes: Processes, schema: str
) -> None:
    processes.settings = settings.model_copy(update={"sinks": ["postgres"]})
    processes.start("sinks", SMS_REPLIES_POSTGRES_DSN=DSN, SMS_REPLIES_POSTGRES_SCHEMA_NAME=schema)
    short = make_reply(1, prefix="short", text="Oui")
    long = make_reply(2, prefix="long", text="Oui, merci beaucoup")
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        for reply in (short, long):
            key = reply.reply_id.encode()
            await producer.send_and_wait(settings.topics.replies, reply.encode(), key=key)
    finally:
        await producer.stop()

    (letter,) = await listed(settings, 1)
    assert letter["origin"] == "sink postgres"
    assert letter["source_topic"] == settings.topics.replies
    assert "22001" in letter["error"] or "too long" in letter["error"]
    assert letter["replayable"] is True
    shown = orjson.loads(await asyncio.to_thread(dead_letters, settings, "show", letter["id"]))
    assert shown["record"]["reply_id"] == long.reply_id
    assert shown["source_key"] == long.reply_id
    assert await stored(schema) == [(short.reply_id, "Oui")]

    con = await asyncpg.connect(DSN)  # the cause, fixed
    try:
        await con.execute(f'ALTER TABLE "{schema}".replies ALTER COLUMN text TYPE text')
    finally:
        await con.close()
    out = await asyncio.to_thread(dead_letters, settings, "replay", letter["id"])
    assert out.startswith(f"replayed {letter['id']} -> {settings.topics.replies}")
    expected = sorted([(short.reply_id, "Oui"), (long.reply_id, long.text)])
    for _ in range(60):
        if await stored(schema) == expected:
            break
        await asyncio.sleep(0.5)
    assert await stored(schema) == expected
    # Replaying again (or everything) stores nothing twice.
    await asyncio.to_thread(dead_letters, settings, "replay", "--all")
    await asyncio.sleep(3.0)
    assert await stored(schema) == expected
    assert len(await listed(settings, 1)) == 1  # nothing new was dead-lettered
