"""The Faust layer of reassembly, through ``agent.test_context()`` (memory store, no broker)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from prometheus_client import REGISTRY

from sms_replies.broker.partitioner import partition_of
from sms_replies.records import Concat, ExpiryTick, RawPart, Reply
from sms_replies.settings import Settings
from sms_replies.streams import app as streams_app
from sms_replies.streams.app import create_app
from sms_replies.streams.batch import SendChangelog
from sms_replies.streams.reassembly import GAP_MARKER, KeyState

Changelog = list[tuple[int, bytes, bytes | None]]


def recording(changelog: Changelog) -> SendChangelog:
    """A changelog sender that keeps the records and acknowledges them at once."""

    async def send(partition: int, key: bytes, value: bytes | None) -> asyncio.Future[Any]:
        changelog.append((partition, key, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(offset=len(changelog) - 1))
        return future

    return send


@pytest.fixture
def changelog() -> Changelog:
    return []


@pytest.fixture
async def harness(tmp_path: Path, changelog: Changelog) -> tuple[faust.App, list[Reply], list[str]]:
    replies: list[Reply] = []
    dead: list[str] = []

    async def publish(reply: Reply) -> None:
        replies.append(reply)

    async def dead_letter(value: bytes, error: str) -> None:
        dead.append(error)

    settings = Settings.load(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path)
    app = create_app(
        settings,
        publish_reply=publish,
        publish_dead_letter=dead_letter,
        publish_changelog=recording(changelog),
        store="memory://",
        loop=asyncio.get_running_loop(),
    )
    app.finalize()
    return app, replies, dead


async def settle(events: list[Any]) -> None:
    """Wait until the agent has handled (acked) every event: it works in batches."""
    async with asyncio.timeout(10):
        # Faust only sets a flag on the message: nothing to await.
        while not all(event.message.acked for event in events):  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def put_parts(app: faust.App, parts: list[RawPart]) -> None:
    """Each part handled before the next is put (a batch each)."""
    agent = app.agents["reassemble"]
    async with agent.test_context() as tested:
        for part in parts:
            await settle([await tested.put(part.encode(), key=part.partition_key)])


async def test_parts_in_reverse_order_give_one_complete_reply(
    harness: tuple[faust.App, list[Reply], list[str]], make_part: Callable[..., RawPart]
) -> None:
    app, replies, _ = harness
    parts = [
        make_part(part=n, total=3, text=t) for n, t in ((1, "Bon"), (2, "jour "), (3, "à vous"))
    ]
    await put_parts(app, list(reversed(parts)))
    assert len(replies) == 1
    assert replies[0].text == "Bonjour à vous"
    assert replies[0].complete is True
    assert replies[0].provider_message_ids == tuple(p.provider_message_id for p in parts)


async def test_duplicates_change_no_state_and_re_emit_the_published_reply(
    harness: tuple[faust.App, list[Reply], list[str]], make_part: Callable[..., RawPart]
) -> None:
    app, replies, _ = harness
    first, second = make_part(part=1, text="a"), make_part(part=2, text="b")
    await put_parts(app, [first, first, second, second])
    assert [r.text for r in replies] == ["ab", "ab"]
    assert replies[0] == replies[1]
    state = KeyState.decode(app.tables["pending"][first.partition_key])
    assert state.parts == {}
    assert state.closed is not None
    assert state.closed.ids == {first.provider_message_id, second.provider_message_id}


async def test_single_message_passes_straight_through(
    harness: tuple[faust.App, list[Reply], list[str]], make_part: Callable[..., RawPart]
) -> None:
    app, replies, _ = harness
    await put_parts(app, [make_part(text="STOP merci")])
    assert [(r.text, r.is_stop, r.parts_expected) for r in replies] == [("STOP merci", True, 1)]


async def test_undecodable_record_goes_to_dead_letter_and_stream_goes_on(
    harness: tuple[faust.App, list[Reply], list[str]], make_part: Callable[..., RawPart]
) -> None:
    app, replies, dead = harness
    agent = app.agents["reassemble"]
    async with agent.test_context() as tested:
        events = [
            await tested.put(b"not json", key=b"k"),
            await tested.put(make_part(text="Oui").encode(), key=b"k"),
        ]
        await settle(events)
    assert len(dead) == 1
    assert "not JSON" in dead[0]
    assert [r.text for r in replies] == ["Oui"]


async def put_on_partition(app: faust.App, records: list[tuple[bytes, int]]) -> None:
    """Put raw values on given partitions, as the broker would deliver them."""
    agent = app.agents["reassemble"]
    async with agent.test_context() as tested:
        events = [
            await tested.put(value, key=None, partition=partition) for value, partition in records
        ]
        await settle(events)


async def test_expiry_ticks_publish_incomplete_then_late_then_forget(
    harness: tuple[faust.App, list[Reply], list[str]], make_part: Callable[..., RawPart]
) -> None:
    app, replies, _ = harness
    timeout_ms, horizon_ms = 1_800_000, 86_400_000  # the settings' defaults
    t0 = 1_700_000_000_000
    first = make_part(part=1, total=3, text="Bonjour ", received_at_ms=t0)
    third = make_part(part=3, total=3, text="fin", received_at_ms=t0 + 60_000)
    late = make_part(part=2, total=3, text="milieu ", received_at_ms=t0 + 4_000_000)
    partition = partition_of(first.partition_key, 8)

    def tick(now_ms: int) -> tuple[bytes, int]:
        return ExpiryTick(now_ms=now_ms).encode(), partition

    await put_on_partition(
        app,
        [
            (first.encode(), partition),
            (third.encode(), partition),
            tick(t0 + 60_000 + timeout_ms - 1),  # sliding: the third part reset the clock
        ],
    )
    assert replies == []
    assert REGISTRY.get_sample_value("sms_replies_pending_messages") == 1
    await put_on_partition(app, [tick(t0 + 60_000 + timeout_ms)])
    assert REGISTRY.get_sample_value("sms_replies_pending_messages") == 0
    [expired] = replies
    assert (expired.text, expired.complete, expired.parts_received) == (
        f"Bonjour {GAP_MARKER}fin",
        False,
        2,
    )
    assert expired.provider_message_ids == (first.provider_message_id, third.provider_message_id)

    await put_on_partition(app, [(late.encode(), partition), (first.encode(), partition)])
    # The late part is published alone; the re-delivered first part re-emits
    # the expired reply it belongs to (same reply_id: one row).
    assert [(r.text, r.late, r.complete) for r in replies[1:]] == [
        (f"{GAP_MARKER}milieu {GAP_MARKER}", True, False),
        (f"Bonjour {GAP_MARKER}fin", False, False),
    ]
    assert replies[2] == expired
    assert first.partition_key in app.tables["pending"]
    await put_on_partition(app, [tick(t0 + 60_000 + timeout_ms + horizon_ms)])
    assert first.partition_key not in app.tables["pending"]
    assert len(replies) == 3


async def test_with_a_pseudonymize_key_no_number_leaves_the_worker_in_clear(
    tmp_path: Path, make_part: Callable[..., RawPart]
) -> None:
    replies: list[Reply] = []

    async def publish(reply: Reply) -> None:
        replies.append(reply)

    settings = Settings.load(
        kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, pseudonymize_key="k3y"
    )
    app = create_app(
        settings,
        publish_reply=publish,
        publish_changelog=recording([]),
        store="memory://",
        loop=asyncio.get_running_loop(),
    )
    app.finalize()
    parts = [make_part(part=n, text=f"p{n}", sender="+33611112222") for n in (2, 1)]
    await put_parts(app, [*parts, make_part(text="STOP", sender="+33611112222")])
    expected = "h:" + hmac.new(b"k3y", b"+33611112222", hashlib.sha256).hexdigest()
    assert [(r.text, r.sender) for r in replies] == [("p1p2", expected), ("STOP", expected)]


async def test_a_key_touched_several_times_in_one_batch_is_written_once(
    harness: tuple[faust.App, list[Reply], list[str]],
    changelog: Changelog,
    make_part: Callable[..., RawPart],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, replies, _ = harness
    # A window long enough that the three parts are surely one batch.
    monkeypatch.setattr(streams_app, "BATCH_WITHIN_S", 1.0)
    parts = [make_part(part=n, total=3, text=t) for n, t in ((2, "b"), (1, "a"), (3, "c"))]
    agent = app.agents["reassemble"]
    async with agent.test_context() as tested:
        events = [await tested.put(p.encode(), key=p.partition_key, wait=False) for p in parts]
        await settle(events)
    assert [r.text for r in replies] == ["abc"]
    [(_, key, value)] = changelog  # one write for three updates
    assert key == parts[0].partition_key
    assert value == app.tables["pending"][key]
    assert value is not None
    state = KeyState.decode(value)
    assert (state.parts, state.closed is not None) == ({}, True)


async def test_every_state_change_reaches_the_changelog(
    harness: tuple[faust.App, list[Reply], list[str]],
    changelog: Changelog,
    make_part: Callable[..., RawPart],
) -> None:
    app, _, _ = harness
    first, second = make_part(part=1, text="a"), make_part(part=2, text="b")
    await put_parts(app, [first, second])
    # Two batches (the first part is handled before the second is put): two writes.
    assert [KeyState.decode(v).parts.keys() for _, _, v in changelog if v] == [{1}, set()]
    assert changelog[-1][2] == app.tables["pending"][first.partition_key]


async def test_a_batch_stopped_half_way_is_not_acked(
    tmp_path: Path, make_part: Callable[..., RawPart]
) -> None:
    """Acked = committable. A batch cut short (shutdown, crash) must be read again."""
    entered = asyncio.Event()

    async def stuck_changelog(partition: int, key: bytes, value: bytes | None) -> Any:
        entered.set()
        await asyncio.Event().wait()  # the broker never answers

    async def publish(reply: Reply) -> None:
        pass

    settings = Settings.load(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path)
    app = create_app(
        settings,
        publish_reply=publish,
        publish_changelog=stuck_changelog,
        store="memory://",
        loop=asyncio.get_running_loop(),
    )
    app.finalize()
    part = make_part(part=1, total=2, text="a")
    async with app.agents["reassemble"].test_context() as tested:
        event = await tested.put(part.encode(), key=part.partition_key)
        await asyncio.wait_for(entered.wait(), 10)  # the batch is being written
    # The agent was stopped in the middle of the batch's writes.
    assert not event.message.acked


async def test_hostile_long_parts_never_make_a_record_the_broker_refuses(
    harness: tuple[faust.App, list[Reply], list[str]],
    changelog: Changelog,
    make_part: Callable[..., RawPart],
) -> None:
    """Review 2026-12: 95 parts of 2,000 control characters on one key made a state of
    1,003,407 bytes, beyond the producer's 1 MB; the worker exited, again and again."""
    app, replies, dead = harness
    hostile = [
        dataclasses.replace(
            make_part(part=n, total=255, text="\x01" * 2000),
            concat=Concat(ref=1, total=255, part=n),
        )
        for n in range(1, 96)
    ]
    await put_parts(app, hostile)
    assert max((len(value or b"") for _, _, value in changelog), default=0) < 1_000_000
    assert len(dead) == 95
    assert replies == []
