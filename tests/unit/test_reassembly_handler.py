"""The worker's batch handling without Faust: a dictionary for a table, plain events."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from sms_replies.bounds import RECORD_MARGIN, Bounds
from sms_replies.records import Concat, ExpiryTick, RawGroup, RawPart, Reply
from sms_replies.streams.handler import ReassemblyHandler, dead_letter_record
from sms_replies.streams.reassembly import GAP_MARKER, KeyState

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


def worker(bounds: Bounds | None = None) -> Worker:
    batch = DictBatch()
    replies: list[Reply] = []
    dead: list[tuple[bytes, str]] = []

    async def publish(reply: Reply) -> None:
        replies.append(reply)

    async def dead_letter(value: bytes, error: str) -> None:
        dead.append((value, error))

    def scan(event: Any) -> dict[int, list[tuple[bytes, bytes]]]:
        return {event.message.partition: list(batch.table.items())}  # one partition here

    handler = ReassemblyHandler(
        timeout_ms=TIMEOUT_MS,
        horizon_ms=HORIZON_MS,
        publish=publish,
        dead_letter=dead_letter,
        scan_table=scan,
        bounds=bounds or Bounds(),
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
    assert KeyState.decode(value).closed is not None
    assert w.batch.table == {key: value}


def _counted() -> dict[tuple[str, str], float]:
    return {
        (name, label): REGISTRY.get_sample_value(name, {key: label}) or 0.0
        for name, key, labels in (
            ("sms_replies_parts_processed_total", "result", ("single", "part", "duplicate")),
            ("sms_replies_parts_processed_total", "result", ("dead_letter",)),
            ("sms_replies_replies_emitted_total", "complete", ("true", "false")),
        )
        for label in labels
    }


async def test_the_metrics_count_each_batch_as_it_was_handled(
    make_part: Callable[..., RawPart],
) -> None:
    w = worker()
    first, second = make_part(part=1, total=2, text="a"), make_part(part=2, total=2, text="b")
    before = _counted()
    await w.run(make_part(text="Oui").encode(), first.encode(), b"not json", first.encode())
    await w.run(second.encode(), partition=0)
    added = {key: value - before[key] for key, value in _counted().items()}
    assert added == {
        ("sms_replies_parts_processed_total", "single"): 1,
        ("sms_replies_parts_processed_total", "part"): 2,
        ("sms_replies_parts_processed_total", "duplicate"): 1,
        ("sms_replies_parts_processed_total", "dead_letter"): 1,
        ("sms_replies_replies_emitted_total", "true"): 2,
        ("sms_replies_replies_emitted_total", "false"): 0,
    }


async def test_what_a_failing_batch_handled_is_counted(
    make_part: Callable[..., RawPart],
) -> None:
    w = worker()

    async def fail(reply: Reply) -> None:
        raise ConnectionError("the producer is gone")

    w.handler._publish = fail
    before = _counted()
    with pytest.raises(ConnectionError):
        await w.run(make_part(part=1, total=2).encode(), make_part(text="Oui").encode())
    added = {key: value - before[key] for key, value in _counted().items() if value > before[key]}
    assert added == {("sms_replies_parts_processed_total", "part"): 1}


async def test_a_bad_record_goes_to_the_dead_letters_and_the_batch_goes_on(
    make_part: Callable[..., RawPart],
) -> None:
    w = worker()
    await w.run(b"not json", make_part(text="Oui").encode())
    assert [value for value, _ in w.dead] == [b"not json"]
    assert [r.text for r in w.replies] == ["Oui"]


async def test_a_group_gives_what_its_parts_give_one_record_each(
    make_part: Callable[..., RawPart],
) -> None:
    second = make_part(part=2, total=2, text="b")
    parts = [
        make_part(text="Oui", sender="+33611111111"),
        second,
        make_part(part=1, total=2, text="a"),
        second,  # the provider's retry of a part
        make_part(text="STOP", sender="+33622222222"),
    ]
    alone, grouped = worker(), worker()
    await alone.run(*(p.encode() for p in parts))
    await grouped.run(RawGroup(tuple(parts)).encode())
    assert grouped.replies == alone.replies
    assert [r.text for r in grouped.replies] == [
        "Oui",
        "ab",
        "ab",
        "STOP",
    ]  # the retry publishes the reply again (same reply_id)
    assert grouped.batch.table == alone.batch.table
    assert grouped.dead == alone.dead == []


async def test_a_bad_part_of_a_group_goes_to_the_dead_letters_alone(
    make_part: Callable[..., RawPart],
) -> None:
    good, bad = make_part(text="Oui"), make_part(text="Non")
    broken = bad.encode().replace(b'"channel":"long_number"', b'"channel":7')
    within_bounds = dataclasses.replace(make_part(text="Si"), message_type="x" * 10_000)
    w = worker()
    await w.run(RawGroup.encode_parts([good.encode(), broken, within_bounds.encode()]))
    assert [r.text for r in w.replies] == ["Oui"]
    assert [value for value, _ in w.dead] == [broken, within_bounds.encode()]


async def test_a_group_that_is_not_one_goes_to_the_dead_letters_whole(
    make_part: Callable[..., RawPart],
) -> None:
    record = b'{"v":1,"parts":{"not":"a list"}}'
    w = worker()
    await w.run(record, make_part(text="Oui").encode())
    assert [value for value, _ in w.dead] == [record]
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


async def test_a_replay_writes_the_held_state_again_so_the_changelog_catches_up(
    make_part: Callable[..., RawPart],
) -> None:
    """The store is written before the changelog: a crash between the two, then a replay."""
    w = worker()
    t0 = 1_700_000_000_000
    first = make_part(part=1, total=2, text="a", received_at_ms=t0)
    await w.run(first.encode())
    [(key, state)] = w.batch.changelog
    w.batch.changelog.clear()  # lost with the crash; the store has it
    await w.run(first.encode())  # the replay: a duplicate for the store
    assert w.batch.changelog == [(key, state)]
    assert w.batch.table == {key: state}

    tick = ExpiryTick(t0 + TIMEOUT_MS).encode()
    await w.run(tick)  # expires it: an incomplete reply and a tombstone
    [(_, tombstone)] = w.batch.changelog[1:]
    del w.batch.changelog[1:]
    w.handler.forget([0])  # the restarted worker rebuilds its index from the store
    await w.run(tick)  # replayed: the same reply again, and the tombstone
    assert w.batch.changelog[1:] == [(key, tombstone)]
    assert [r.text for r in w.replies] == [f"a{GAP_MARKER}", f"a{GAP_MARKER}"]


async def test_a_failing_send_is_not_the_records_fault_it_fails_the_batch(
    make_part: Callable[..., RawPart],
) -> None:
    """Not dead-lettered (its state staged, its reply lost): the batch fails, is not
    acked, and the worker exits before any commit (streams.app)."""
    w = worker()

    async def broker_gone(reply: Reply) -> None:
        raise ConnectionError("broker gone")

    w.handler._publish = broker_gone
    with pytest.raises(ConnectionError):
        await w.run(make_part(part=1, total=1, text="a").encode())
    assert (w.dead, w.batch.table) == ([], {})


async def test_hostile_long_parts_go_to_the_dead_letters_and_no_state_grows(
    make_part: Callable[..., RawPart],
) -> None:
    """The review's 95 parts of 2,000 control characters (255 parts announced), one key."""
    w = worker()
    hostile = [
        dataclasses.replace(
            make_part(part=n, total=255, text="\x01" * 2000),
            concat=Concat(ref=1, total=255, part=n),
        )
        for n in range(1, 96)
    ]
    await w.run(*(p.encode() for p in hostile))
    assert len(w.dead) == 95
    assert all("beyond" in error for _, error in w.dead)
    assert (w.batch.table, w.replies) == ({}, [])


async def test_a_state_beyond_the_bound_is_closed_as_incomplete(
    make_part: Callable[..., RawPart],
) -> None:
    """A state written under larger bounds: the next part closes the message, no crash."""
    held = [make_part(part=n, total=10, text="é" * 300) for n in (1, 2, 3, 4, 5)]
    state = KeyState(total=10, parts={n: p for n, p in enumerate(held, 1)}).encode()
    bounds = Bounds(max_record_bytes=len(state) + RECORD_MARGIN - 1)  # just too small
    w = worker(bounds)
    w.batch.table[held[0].partition_key] = state
    await w.run(make_part(part=6, total=10, text="six").encode())
    assert w.dead == []
    [reply] = w.replies
    assert (reply.complete, reply.parts_received) == (False, 6)
    assert reply.text == "é" * 1500 + "six" + GAP_MARKER * 4
    assert w.batch.changelog == [(held[0].partition_key, None)]  # not even a tombstone fits
    assert w.dead == []


def test_a_dead_letter_fits_in_a_record_whatever_it_carries() -> None:
    value = orjson.dumps({"text": "\x01" * 400_000})  # 2.4 MB once escaped again
    record = dead_letter_record("reassembly", value, "E" * 5000, max_bytes=100_000)
    assert len(record) <= 100_000
    envelope = orjson.loads(record)
    assert (envelope["truncated"], envelope["record_bytes"]) == (True, len(value))
    assert value.decode().startswith(envelope["record"])
    small = orjson.loads(dead_letter_record("reassembly", b"oops", "bad", max_bytes=100_000))
    assert small == {"stage": "reassembly", "error": "bad", "record": "oops"}


# Raw records as a hostile or broken writer could put them on the raw topic: parts
# that share a few keys (so that states build up, collide, expire), with any field
# oversized, missing, extra or of the wrong type; ticks; and bytes that are not JSON.
SMALL = Bounds(max_part_text=40, max_single_text=80, max_parts=6, max_record_bytes=65_536)
anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
texts = st.one_of(
    st.text(max_size=30),
    st.text(max_size=30),
    st.text(alphabet="\x01é😀 ", min_size=30, max_size=400),  # up to 10x the bound
)
concats = st.one_of(
    st.fixed_dictionaries(
        {"ref": st.integers(0, 1), "total": st.integers(1, 3), "part": st.integers(1, 3)}
    ),
    st.fixed_dictionaries(
        {"ref": st.integers(0, 1), "total": st.integers(1, 3), "part": st.integers(1, 3)}
    ),
    st.fixed_dictionaries(
        {"ref": st.integers(0, 2), "total": st.integers(0, 9), "part": st.integers(0, 9)}
    ),
    st.none(),
    anything,
)
part_fields = st.fixed_dictionaries(
    {
        "v": st.just(1),
        "channel": st.sampled_from(["long_number", "short_number"]),
        "sender": st.sampled_from(["+33612345678", "+33698765432"]),
        "recipient": st.sampled_from(["+33756781234", None]),
        "text": texts,
        "provider_message_id": st.sampled_from("abcdef") | st.text(max_size=150),
        "message_type": st.sampled_from(["text", "unicode", "stop"]),
        "received_at_ms": st.integers(1_700_000_000_000, 1_700_000_000_000 + 4 * TIMEOUT_MS),
        "concat": concats,
        "provider_timestamp": st.none() | st.text(max_size=40),
    }
)
wrong_fields = st.dictionaries(
    st.sampled_from(["channel", "sender", "text", "received_at_ms", "concat", "v", "extra"]),
    anything,
)
raw_parts = st.builds(
    lambda base, wrong: {**base, **wrong}, part_fields, st.just({}) | wrong_fields
)


@st.composite
def plausible_parts(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed parts of a few long replies: they complete, collide, repeat."""
    total = draw(st.integers(1, 3))
    number = draw(st.integers(1, total))
    ref = draw(st.integers(0, 1))
    return {
        **draw(part_fields),
        "channel": "long_number",
        "recipient": "+33756781234",
        "concat": {"ref": ref, "total": total, "part": number},
        "provider_message_id": f"{ref}-{total}-{number}-{draw(st.sampled_from('ab'))}",
    }


ticks = st.builds(
    lambda t: {"v": 1, "tick_ms": t},
    st.integers(1_700_000_000_000, 1_700_000_000_000 + 4 * HORIZON_MS) | anything,
)
records = st.one_of(
    plausible_parts().map(orjson.dumps),
    plausible_parts().map(orjson.dumps),
    plausible_parts().map(orjson.dumps),
    raw_parts.map(orjson.dumps),
    raw_parts.map(orjson.dumps),
    ticks.map(orjson.dumps),
    st.binary(max_size=50),
    anything.map(orjson.dumps),
    # Groups as the ingress writes them, and groups of anything.
    st.lists(plausible_parts() | raw_parts, max_size=5)
    .map(lambda p: {"v": 1, "parts": p})
    .map(orjson.dumps),
    st.builds(lambda p: {"v": 1, "parts": p}, anything).map(orjson.dumps),
)


def _records_in(value: bytes) -> int:
    """Records a raw record stands for: a group's parts, or itself."""
    try:
        parts = orjson.loads(value).get("parts")
    except (orjson.JSONDecodeError, AttributeError):
        return 1
    return max(1, len(parts)) if isinstance(parts, list) else 1


@given(st.lists(st.lists(records, max_size=15), max_size=6))
@example([[b'{"v":1,"tick_ms":1e400}', b'{"v":1,"text":"\\ud800"}', b"\xff", b"[]", b""]])
def test_batch_handling_never_raises_and_writes_only_what_fits(
    batches: list[list[bytes]],
) -> None:
    w = worker(SMALL)

    async def handle() -> None:
        for batch in batches:
            await w.run(*batch, partition=0)

    asyncio.run(handle())
    handled = sum(_records_in(value) for batch in batches for value in batch)
    assert len(w.dead) <= handled
    for _, value in w.batch.changelog:
        assert value is None or len(value) <= SMALL.max_value_bytes
        if value is not None:
            KeyState.decode(value)  # what is stored can be read back
    for reply in w.replies:
        assert len(reply.encode()) <= SMALL.max_value_bytes
        assert 1 <= reply.parts_received <= reply.parts_expected <= SMALL.max_parts


@pytest.fixture(autouse=True)
def _no_log_noise(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="sms_replies.streams.handler")


async def test_replies_held_back_by_publish_leave_before_the_batchs_state(
    make_part: Callable[..., RawPart],
) -> None:
    """The worker's outbox holds a batch's replies (streams.outbox): the handler sends
    them at the batch's end, before the table writes, and before it returns."""
    events: list[str] = []
    held: list[Reply] = []

    class Recording(DictBatch):
        async def flush(self) -> None:
            events.append(f"state {len(self.staged)}")

    async def publish(reply: Reply) -> None:
        held.append(reply)

    async def flush_replies() -> None:
        events.append(f"replies {len(held)}")
        held.clear()

    async def dead_letter(value: bytes, error: str) -> None:
        raise AssertionError(error)

    handler = ReassemblyHandler(
        timeout_ms=TIMEOUT_MS,
        horizon_ms=HORIZON_MS,
        publish=publish,
        dead_letter=dead_letter,
        scan_table=lambda event: {},
        flush_replies=flush_replies,
    )
    parts = [make_part(part=n, total=2, text=t) for n, t in ((2, "b"), (1, "a"))]
    single = make_part(text="Oui")
    batch = Recording()
    await handler.handle_batch(batch, [Event(p.encode(), Message(0)) for p in (*parts, single)])
    assert events == ["replies 2", "state 1"]


async def test_the_first_tick_indexes_every_partition_from_one_scan_of_the_table(
    make_part: Callable[..., RawPart],
) -> None:
    """After a restart the table holds pending replies of several partitions; the
    first tick of any of them builds every index, reading the table once."""
    t0 = 1_700_000_000_000
    first = {p: make_part(part=1, total=2, text=f"p{p}", ref=p, received_at_ms=t0) for p in (0, 1)}
    w = worker()
    for partition, part in first.items():
        await w.run(part.encode(), partition=partition)
    restarted = worker()
    restarted.batch.table = dict(w.batch.table)  # the table recovered, no index yet
    table_partition = {
        key: p for p in (0, 1) for key in w.batch.table if key.endswith(b"|%d|2" % p)
    }
    scans: list[int] = []

    def scan(event: Any) -> dict[int, list[tuple[bytes, bytes]]]:
        scans.append(event.message.partition)
        entries: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in restarted.batch.table.items():
            entries.setdefault(table_partition[key], []).append((key, value))
        return entries

    restarted.handler._scan_table = scan
    await restarted.run(ExpiryTick(t0 + 1).encode(), partition=0)
    assert restarted.handler.waiting == {0: 1, 1: 1}
    await restarted.run(ExpiryTick(t0 + TIMEOUT_MS).encode(), partition=1)
    assert [(r.text, r.complete) for r in restarted.replies] == [(f"p1{GAP_MARKER}", False)]
    assert scans == [0]  # partition 1 was indexed by partition 0's tick
