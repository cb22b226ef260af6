"""Reassembly of long replies (pure): every order, duplicates, collisions."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_replies.records import Concat, RawPart, Reply
from sms_replies.streams.reassembly import (
    GAP_MARKER,
    KeyState,
    accept,
    assemble,
    expire,
    expire_due,
    recovery_deadline,
    single_reply,
)

MakePart = Callable[..., RawPart]


def feed(parts: Iterable[RawPart]) -> tuple[list[Reply], dict[str, KeyState]]:
    """Run parts through accept() with a dict as the table; round-trip the state as bytes."""
    table: dict[str, KeyState] = {}
    replies: list[Reply] = []
    for part in parts:
        key = part.reassembly_key
        held = table.get(key) if key else None
        step = accept(KeyState.decode(held.encode()) if held else None, part)
        if key is not None:
            if step.pending is None:
                table.pop(key, None)
            else:
                table[key] = step.pending
        replies.extend(step.replies)
    return replies, table


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_every_order_of_three_parts_gives_the_same_reply(
    order: tuple[int, ...], make_part: MakePart
) -> None:
    parts = [make_part(part=n, total=3, text=t) for n, t in ((1, "a"), (2, "b"), (3, "c"))]
    replies, _ = feed(parts[i] for i in order)
    assert len(replies) == 1
    reply = replies[0]
    assert reply.text == "abc"
    assert reply.complete
    assert (reply.parts_expected, reply.parts_received) == (3, 3)
    assert reply.provider_message_ids == tuple(p.provider_message_id for p in parts)


def test_reply_takes_the_earliest_part_time(make_part: MakePart) -> None:
    late = make_part(part=1, received_at_ms=2_000)
    early = make_part(part=2, received_at_ms=1_000)
    replies, _ = feed([late, early])
    assert replies[0].received_at_ms == 1_000


def test_duplicates_change_nothing_and_re_emit_a_published_reply(make_part: MakePart) -> None:
    first, second = make_part(part=1, text="x"), make_part(part=2, text="y")
    replies, table = feed([first, first, second, first, second])
    # The pending duplicate emits nothing; after completion each copy re-emits
    # the same reply (same id, same row), which the sinks store once.
    assert [r.text for r in replies] == ["xy", "xy", "xy"]
    assert replies[0] == replies[1] == replies[2]
    state = table[first.reassembly_key or ""]
    assert state.parts == {}


# After a SIGKILL the worker's RocksDB may already hold the effect of a record
# whose reply never left the process; the record is then replayed against that
# state. Each of these must publish the reply again.


def test_replayed_last_part_re_emits_the_completed_reply(make_part: MakePart) -> None:
    first, last = make_part(part=1, text="a"), make_part(part=2, text="b")
    step = accept(accept(accept(None, first).pending, last).pending, last)
    assert step.duplicate
    assert [r.text for r in step.replies] == ["ab"]


def test_replayed_expiry_tick_re_emits_the_incomplete_reply(make_part: MakePart) -> None:
    pending = accept(None, make_part(part=1, text="a", received_at_ms=1_000)).pending
    assert pending is not None
    expired = expire_due(pending, 10_000, timeout_ms=5_000, horizon_ms=60_000)
    assert expired.pending is not None
    assert [r.text for r in expired.replies] == [f"a{GAP_MARKER}"]
    assert recovery_deadline(expired.pending, timeout_ms=5_000, horizon_ms=60_000) == 10_000
    replayed = expire_due(expired.pending, 10_000, timeout_ms=5_000, horizon_ms=60_000)
    assert replayed.replies == expired.replies
    later = expire_due(expired.pending, 10_001, timeout_ms=5_000, horizon_ms=60_000)
    assert later.replies == ()
    assert later.pending == expired.pending


def test_replayed_late_part_re_emits_the_late_reply(make_part: MakePart) -> None:
    pending = accept(None, make_part(part=1, text="a", received_at_ms=0)).pending
    assert pending is not None
    closed = expire_due(pending, 10_000, timeout_ms=5_000, horizon_ms=60_000).pending
    late = make_part(part=2, text="b")
    first_time = accept(closed, late)
    again = accept(first_time.pending, late)
    assert [(r.text, r.late) for r in first_time.replies] == [(f"{GAP_MARKER}b", True)]
    assert again.replies == first_time.replies


def test_replayed_colliding_part_re_emits_the_flushed_reply(make_part: MakePart) -> None:
    stale, fresh = make_part(part=1, text="old"), make_part(part=1, text="new")
    first_time = accept(accept(None, stale).pending, fresh)
    again = accept(first_time.pending, fresh)
    assert [r.text for r in first_time.replies] == [f"old{GAP_MARKER}"]
    assert again.replies == first_time.replies


def test_same_ref_from_two_senders_never_mixes(make_part: MakePart) -> None:
    a1 = make_part(part=1, text="A1", sender="+33600000001")
    b1 = make_part(part=1, text="B1", sender="+33600000002")
    a2 = make_part(part=2, text="A2", sender="+33600000001")
    b2 = make_part(part=2, text="B2", sender="+33600000002")
    replies, _ = feed([a1, b1, b2, a2])
    assert sorted((r.sender, r.text) for r in replies) == [
        ("+33600000001", "A1A2"),
        ("+33600000002", "B1B2"),
    ]


def test_reused_ref_after_completion_starts_a_new_message(make_part: MakePart) -> None:
    old = [make_part(part=1, text="old1"), make_part(part=2, text="old2")]
    new = [make_part(part=2, text="new2"), make_part(part=1, text="new1")]
    replies, _ = feed([*old, *new])
    assert [r.text for r in replies] == ["old1old2", "new1new2"]


def test_part_number_taken_by_another_id_flushes_the_pending_message(
    make_part: MakePart,
) -> None:
    stale = make_part(part=1, total=3, text="lost-")
    fresh = [make_part(part=n, total=3, text=f"n{n}") for n in (1, 2, 3)]
    replies, _ = feed([stale, *fresh])
    assert [(r.text, r.complete) for r in replies] == [
        (f"lost-{GAP_MARKER}{GAP_MARKER}", False),
        ("n1n2n3", True),
    ]


def test_expiry_marks_gaps_and_keeps_order(make_part: MakePart) -> None:
    parts = {n: make_part(part=n, total=4, text=f"p{n}") for n in (3, 1)}
    reply = expire(KeyState(total=4, parts=parts))
    assert reply.text == f"p1{GAP_MARKER}p3{GAP_MARKER}"
    assert not reply.complete
    assert (reply.parts_expected, reply.parts_received) == (4, 2)


def test_single_message_passes_through_and_leaves_state_alone(make_part: MakePart) -> None:
    single = make_part(text="Oui")
    step = accept(None, single)
    assert step.pending is None
    assert [(r.text, r.parts_expected, r.complete) for r in step.replies] == [("Oui", 1, True)]


@given(
    st.builds(
        RawPart,
        channel=st.sampled_from(["long_number", "short_number"]),
        sender=st.sampled_from(["+33612345678", "h:" + "ab" * 32]),
        recipient=st.sampled_from(["+33756781234", None]),
        text=st.sampled_from(["", "Oui", "STOP", "stop merci", "Arrêt!"]) | st.text(max_size=80),
        provider_message_id=st.text(max_size=20),
        message_type=st.sampled_from(["text", "unicode", "stop", "binary"]),
        received_at_ms=st.integers(0, 253_402_300_799_999),
        concat=st.none(),
        provider_timestamp=st.sampled_from([None, "2026-11-25 09:51:46", "2016-02-30 00:00:00"])
        | st.text(max_size=20),
        campaign=st.sampled_from([None, "spring"]),
        tag=st.sampled_from([None, "a b"]),
    )
)
def test_a_single_reply_is_the_reply_assembled_of_its_one_part(part: RawPart) -> None:
    assert single_reply(part) == assemble([part], total=1)
    assert single_reply(part).encode() == assemble([part], total=1).encode()


def test_reply_id_is_deterministic_and_distinct(make_part: MakePart) -> None:
    a = make_part(text="Oui", message_id="m1")
    assert feed([a])[0][0].reply_id == feed([a])[0][0].reply_id
    b = make_part(text="Oui", message_id="m2")
    assert feed([a])[0][0].reply_id != feed([b])[0][0].reply_id


# Property: any interleaving, with duplicates, of the parts of any set of
# messages (distinct senders or distinct refs) gives exactly those messages.
message_shape = st.tuples(
    st.integers(min_value=1, max_value=5),  # parts
    st.integers(min_value=0, max_value=3),  # sender index (collisions likely)
    st.integers(min_value=0, max_value=2),  # concat-ref (collisions likely)
)


@settings(max_examples=300, deadline=None)
@given(
    shapes=st.lists(message_shape, min_size=1, max_size=6, unique_by=lambda s: (s[1], s[2], s[0])),
    data=st.data(),
)
def test_any_order_and_duplication_gives_exactly_the_messages(
    shapes: list[tuple[int, int, int]], data: st.DataObject
) -> None:
    parts: list[RawPart] = []
    expected: dict[tuple[str, ...], str] = {}
    for index, (total, sender, ref) in enumerate(shapes):
        texts = [f"m{index}p{n}." for n in range(1, total + 1)]
        ids = tuple(f"id-{index}-{n}" for n in range(1, total + 1))
        expected[ids] = "".join(texts)
        for n in range(1, total + 1):
            parts.append(
                RawPart(
                    channel="long_number",
                    sender=f"+3361234560{sender}",
                    recipient="+33756781234",
                    text=texts[n - 1],
                    provider_message_id=ids[n - 1],
                    message_type="text",
                    received_at_ms=1_000 + n,
                    concat=Concat(ref=ref, total=total, part=n) if total > 1 else None,
                )
            )
    duplicated = parts + data.draw(st.lists(st.sampled_from(parts), max_size=len(parts)))
    shuffled = data.draw(st.permutations(duplicated))
    replies, table = feed(shuffled)
    # A re-delivered single message is a second copy of the same reply_id; the
    # sinks store one row per reply_id, so that is the set to compare.
    stored = {r.reply_id: r for r in replies}.values()
    assert {r.provider_message_ids: r.text for r in stored} == expected
    assert len(stored) == len(expected)
    assert all(r.complete for r in stored)
    # A re-emitted reply is the very same reply: one row however often it comes.
    assert all(reply == {r.reply_id: r for r in replies}[reply.reply_id] for reply in replies)
    assert all(not state.parts for state in table.values())
