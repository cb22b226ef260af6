"""The worker's batch handling without Faust: a dictionary for a table, plain events."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from sms_replies.contract import ExpiryTick, RawPart, Reply
from sms_replies.streams.handler import ReassemblyHandler
from sms_replies.streams.reassembly import GAP_MARKER, PendingMessage

TIMEOUT_MS, HORIZON_MS = 1_800_000, 86_400_000


@dataclass(frozen=True)
class Message:
    partition: int


@dataclass(frozen=True)
class Event:
    value: bytes
    message: Message


@dataclass
class DictBatch:
    """The table as a dictionary; writes staged until flush, like TableBatch."""

    table: dict[bytes, bytes] = field(default_factory=dict)
    changelog: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    staged: dict[bytes, bytes | None] = field(default_factory=dict)

    def get(self, key: bytes, event: Any) -> bytes | None:
        if key in self.staged:
            return self.staged[key]
        return self.table.get(key)

    def set(self, key: bytes, value: bytes | None, event: Any) -> None:
        self.staged[key] = value

    async def flush(self) -> None:
        for key, value in self.staged.items():
            if value is None:
                self.table.pop(key, None)
            else:
                self.table[key] = value
            self.changelog.append((key, value))
        self.staged.clear()


@dataclass
class Worker:
    batch: DictBatch
    handler: ReassemblyHandler
    replies: list[Reply]
    dead: list[tuple[bytes, str]]

    async def run(self, *values: bytes, partition: int = 0) -> None:
        events = [Event(value, Message(partition)) for value in values]
        await self.handler.handle_batch(self.batch, events)


def worker(**limits: Any) -> Worker:
    batch = DictBatch()
    replies: list[Reply] = []
    dead: list[tuple[bytes, str]] = []

    async def publish(reply: Reply) -> None:
        replies.append(reply)

    async def dead_letter(value: bytes, error: str) -> None:
        dead.append((value, error))

    def scan(event: Any, partition: int) -> Iterable[tuple[bytes, bytes]]:
        return list(batch.table.items())  # one partition in these tests

    handler = ReassemblyHandler(
        timeout_ms=TIMEOUT_MS,
        horizon_ms=HORIZON_MS,
        publish=publish,
        dead_letter=dead_letter,
        scan_partition=scan,
        **limits,
    )
    return Worker(batch, handler, replies, dead)


async def test_parts_of_one_batch_make_one_reply_and_one_write(
    make_part: Callable[..., RawPart],
) -> None:
    w = worker()
    parts = [make_part(part=n, total=3, text=t) for n, t in ((3, "c"), (1, "a"), (2, "b"))]
    await w.run(*(p.encode() for p in parts))
    assert [(r.text, r.complete) for r in w.replies] == [("abc", True)]
    [(key, value)] = w.batch.changelog
    assert value is not None
    assert PendingMessage.decode(value).closed is not None
    assert w.batch.table == {key: value}


async def test_a_bad_record_goes_to_the_dead_letters_and_the_batch_goes_on(
    make_part: Callable[..., RawPart],
) -> None:
    w = worker()
    await w.run(b"not json", make_part(text="Oui").encode())
    assert [value for value, _ in w.dead] == [b"not json"]
    assert [r.text for r in w.replies] == ["Oui"]


async def test_a_tick_expires_a_message_whose_parts_stopped_coming(
    make_part: Callable[..., RawPart],
) -> None:
    w = worker()
    t0 = 1_700_000_000_000
    first = make_part(part=1, total=2, text="a", received_at_ms=t0)
    await w.run(first.encode(), ExpiryTick(t0 + TIMEOUT_MS - 1).encode())
    assert (w.replies, w.handler.waiting) == ([], {0: 1})
    await w.run(ExpiryTick(t0 + TIMEOUT_MS).encode())
    assert [(r.text, r.complete) for r in w.replies] == [(f"a{GAP_MARKER}", False)]
    assert w.handler.waiting == {0: 0}
    w.handler.forget([0])
    assert w.handler.waiting == {}


@pytest.fixture(autouse=True)
def _no_log_noise(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="sms_replies.streams.handler")
