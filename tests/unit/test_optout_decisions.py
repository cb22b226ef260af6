"""The opt-out list's rule, pure: one decision per reply, the latest per sender wins."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sms_replies.optout import (
    DEFAULT_RESUBSCRIBE_KEYWORDS,
    Decision,
    batch_decisions,
    decision_of,
    latest,
    resubscribe_keywords,
    version,
)
from sms_replies.records import Reply
from sms_replies.settings import Settings
from sms_replies.sinks.testing import make_reply

RESUBSCRIBE = resubscribe_keywords(DEFAULT_RESUBSCRIBE_KEYWORDS)


def _reply(keyword: str, *, n: int = 1, **changes: object) -> Reply:
    return make_reply(n, text=keyword.title(), keyword=keyword, **changes)  # type: ignore[arg-type]


def test_a_short_number_stop_opts_out_with_source_provider() -> None:
    reply = _reply(
        "MERCI", channel="short_number", recipient=None, is_stop=True, stop_source="provider"
    )
    decision = decision_of(reply, RESUBSCRIBE)
    assert decision == Decision(
        reply.sender, "opted_out", reply.received_at_ms, reply.reply_id, "provider"
    )


def test_a_stop_text_opts_out_with_source_text() -> None:
    decision = decision_of(_reply("STOP", is_stop=True, stop_source="text"), RESUBSCRIBE)
    assert decision is not None
    assert (decision.status, decision.source) == ("opted_out", "text")


@pytest.mark.parametrize("keyword", ["START", "UNSTOP", "REABONNER", "REINSCRIRE"])
def test_a_resubscribe_keyword_opts_in(keyword: str) -> None:
    decision = decision_of(_reply(keyword), RESUBSCRIBE)
    assert decision is not None
    assert (decision.status, decision.source) == ("opted_in", "keyword")


@pytest.mark.parametrize("keyword", ["OUI", "YES", "NON", "", "STARTER"])
def test_other_replies_decide_nothing(keyword: str) -> None:
    assert decision_of(_reply(keyword), RESUBSCRIBE) is None


def test_oui_opts_in_only_when_configured() -> None:
    assert decision_of(_reply("OUI"), resubscribe_keywords(["start", "Oui"])) is not None


def test_keywords_are_folded_and_checked() -> None:
    assert resubscribe_keywords(["réabonner", " Start "]) == {"REABONNER", "START"}
    for bad in ("stop", "Arrêt", "re abonner", "", "!!"):
        with pytest.raises(ValueError, match=r"one word|STOP keyword"):
            resubscribe_keywords([bad])


def test_the_setting_reads_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_REPLIES_RESUBSCRIBE_KEYWORDS", "start, Réinscrire")
    assert Settings.load().resubscribe_keywords == ["REINSCRIRE", "START"]
    monkeypatch.setenv("SMS_REPLIES_RESUBSCRIBE_KEYWORDS", "START,STOP")
    with pytest.raises(ValidationError, match="STOP keyword"):
        Settings.load()
    monkeypatch.delenv("SMS_REPLIES_RESUBSCRIBE_KEYWORDS")
    assert Settings.load().resubscribe_keywords == sorted(DEFAULT_RESUBSCRIBE_KEYWORDS)


def test_in_the_same_millisecond_the_opt_out_wins_whatever_the_order() -> None:
    out = Decision("+33600000001", "opted_out", 1000, "aaaa", "text")
    back_in = Decision("+33600000001", "opted_in", 1000, "ffff", "keyword")
    assert latest([out, back_in]) == {out.sender: out}
    assert latest([back_in, out]) == {out.sender: out}


def test_stop_start_oui_leaves_the_start() -> None:
    stop = _reply("STOP", n=1, is_stop=True, stop_source="text")
    start = dataclasses.replace(_reply("START", n=2), sender=stop.sender)
    oui = dataclasses.replace(_reply("OUI", n=3), sender=stop.sender)
    for order in ([stop, start, oui], [oui, start, stop], [start, oui, stop]):
        (decision,) = batch_decisions(order, RESUBSCRIBE)
        assert (decision.status, decision.reply_id) == ("opted_in", start.reply_id)


# Few senders, times and ids: ties and repeats are common.
decisions = st.builds(
    Decision,
    sender=st.sampled_from(["+33600000001", "+33600000002", "h:ab"]),
    status=st.sampled_from(["opted_out", "opted_in"]),
    since_ms=st.integers(0, 3),
    reply_id=st.text(alphabet="0123456789abcdef", min_size=1, max_size=2),
    source=st.sampled_from(["provider", "text", "keyword"]),
)


def _upsert(table: dict[str, Decision], decision: Decision) -> None:
    """What the stores do for one row: replace only when the new decision ranks higher."""
    held = table.get(decision.sender)
    if held is None or decision.supersedes(held):
        table[decision.sender] = decision


# A reply_id names one reply, hence one decision; repeats of a decision are replays.
@given(
    st.lists(decisions, max_size=12, unique_by=lambda d: d.reply_id),
    st.randoms(),
    st.integers(1, 5),
)
def test_any_order_and_any_batching_ends_in_the_same_table(
    sequence: list[Decision], random: object, batch_size: int
) -> None:
    expected = latest(sequence)
    shuffled = list(sequence)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    one_by_one: dict[str, Decision] = {}
    for decision in shuffled:
        _upsert(one_by_one, decision)
    batched: dict[str, Decision] = {}
    for start in range(0, len(shuffled), batch_size):
        for decision in latest(shuffled[start : start + batch_size]).values():
            _upsert(batched, decision)
    replayed = dict(batched)
    for decision in shuffled[: len(shuffled) // 2]:  # a replay of earlier batches
        _upsert(replayed, decision)
    assert one_by_one == batched == replayed == expected
    for sender, winner in expected.items():
        rivals = [d for d in sequence if d.sender == sender]
        assert winner.rank == max(d.rank for d in rivals)


hex_ids = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


@given(
    st.tuples(st.integers(0, 2**41), st.sampled_from(["opted_out", "opted_in"]), hex_ids),
    st.tuples(st.integers(0, 2**41), st.sampled_from(["opted_out", "opted_in"]), hex_ids),
)
def test_the_clickhouse_version_orders_as_the_rank(
    a: tuple[int, str, str], b: tuple[int, str, str]
) -> None:
    first = Decision("s", a[1], a[0], a[2], "text")  # type: ignore[arg-type]
    second = Decision("s", b[1], b[0], b[2], "text")  # type: ignore[arg-type]
    if first.rank[:2] == second.rank[:2] and first.reply_id[:5] == second.reply_id[:5]:
        assert version(first) == version(second)  # the documented blind spot
    else:
        assert (version(first) > version(second)) == (first.rank > second.rank)
    assert version(first) < 2**64


def test_the_version_of_a_non_hex_reply_id_still_orders_by_time() -> None:
    early = Decision("s", "opted_out", 5, "zzz", "text")
    late = Decision("s", "opted_in", 6, "r-000000001", "keyword")
    assert version(late) > version(early)
