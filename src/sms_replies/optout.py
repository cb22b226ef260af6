"""Keywords, STOP detection and the opt-out decisions: pure functions, no I/O.

- :func:`keyword_of`, :func:`stop_source`: a reply's keyword and whether it is a STOP.
- :func:`decision_of`: what one reply decides for its sender's place on the opt-out
  list: ``opted_out`` when it is a STOP (source ``provider`` for a short-number
  ``type: stop``, ``text`` for a STOP-family text), ``opted_in`` when its keyword
  is a re-subscribe keyword (source ``keyword``; setting
  ``SMS_REPLIES_RESUBSCRIBE_KEYWORDS``), otherwise nothing.
- :func:`latest`: the rule: the latest decision by ``received_at`` wins whatever
  order the replies come in; in the same millisecond the opt-out wins
  (compliance-safe), then the greater ``reply_id``. :attr:`Decision.rank` is that
  order; the stores' upserts keep a row only when the new one ranks higher, so
  any order and any replay end in the same table.
- :func:`version`: that order packed in a UInt64 for ClickHouse.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sms_replies.records import Reply, StopSource

# First words that mean "stop sending me messages" in French and English replies.
STOP_KEYWORDS = frozenset(
    {
        "STOP",
        "STOPSMS",
        "ARRET",
        "ARRETER",
        "ARRETEZ",
        "DESABONNER",
        "DESABONNEMENT",
        "DESINSCRIRE",
        "DESINSCRIPTION",
        "UNSUBSCRIBE",
    }
)

_NON_WORD = re.compile(r"[^A-Z0-9]+")
#: A word of an ASCII text before it is uppercased (ASCII's upper() changes a-z only).
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")


def _fold(text: str) -> str:
    """Uppercase, strip accents and turn punctuation into spaces."""
    if text.isascii():  # NFKD leaves ASCII as it is, and it has no combining marks
        return _NON_WORD.sub(" ", text.upper()).strip()
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_only = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_WORD.sub(" ", ascii_only.upper()).strip()


#: Folding is per character, so the folded head of a text is the head of the folded
#: text: when it already holds a word break, the first word is whole in it.
_HEAD = 64
#: A keyword is at most this long: longer first words are cut (a reply record's
#: size then depends on its text alone, see sms_replies.bounds).
MAX_KEYWORD = 64


def keyword_of(text: str) -> str:
    """First word of the text, uppercased, accents and punctuation stripped ('' if none).

    At most MAX_KEYWORD characters.
    """
    word, whole = _first_word_of_head(text[:_HEAD])
    if whole or len(text) <= _HEAD:
        return word[:MAX_KEYWORD]
    folded = _fold(text)  # the first word may go on past the head (rare: not cached)
    return folded.split(" ", 1)[0][:MAX_KEYWORD] if folded else ""


# A reply's keyword and its STOP check fold the same text. Keyed by the head, so
# the cache holds at most 1,024 heads of 64 characters whatever the texts' length.
@functools.lru_cache(maxsize=1024)
def _first_word_of_head(head: str) -> tuple[str, bool]:
    """The head's first word, and whether it is whole (a word break follows it)."""
    if head.isascii():  # as _fold's words, without building the folded head
        first = _ASCII_WORD.search(head)
        if first is None:
            return "", False
        return first.group().upper(), _ASCII_WORD.search(head, first.end()) is not None
    folded = _fold(head)
    return (folded.split(" ", 1)[0] if folded else ""), " " in folded


def stop_source(text: str, message_type: str) -> StopSource | None:
    """Why this reply is an opt-out: the provider said so, or the text says so; None if not."""
    if message_type == "stop":
        return "provider"
    return stop_source_of_keyword(keyword_of(text), message_type)


def stop_source_of_keyword(keyword: str, message_type: str) -> StopSource | None:
    """:func:`stop_source` of a text whose :func:`keyword_of` is ``keyword`` (folded once)."""
    if message_type == "stop":
        return "provider"
    if keyword in STOP_KEYWORDS:
        return "text"
    return None


# -- the opt-out list: one decision per reply, the latest per sender wins ------------------

#: Re-subscribe keywords by default (a reply's folded first word; see docs/schema.md).
#: "OUI"/"YES" are deliberately not among them: they answer campaign questions.
DEFAULT_RESUBSCRIBE_KEYWORDS: tuple[str, ...] = (
    "START",
    "UNSTOP",
    "REABONNER",
    "REABONNEMENT",
    "REINSCRIRE",
    "REINSCRIPTION",
)

OptoutStatus = Literal["opted_out", "opted_in"]
DecisionSource = Literal["provider", "text", "keyword"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What one reply decides for its sender: a row of the ``optouts`` table."""

    sender: str
    status: OptoutStatus
    since_ms: int  # received_at of the deciding reply
    reply_id: str
    source: DecisionSource

    @property
    def rank(self) -> tuple[int, int, str]:
        """The order of decisions: later wins; same millisecond: the opt-out, then reply_id."""
        return (self.since_ms, 1 if self.status == "opted_out" else 0, self.reply_id)

    def supersedes(self, other: Decision) -> bool:
        return self.rank > other.rank


def resubscribe_keywords(words: Iterable[str]) -> frozenset[str]:
    """The keywords as replies' ``keyword`` holds them (folded); ValueError for an empty one
    or a STOP keyword (a STOP always opts out)."""
    folded: set[str] = set()
    for word in words:
        keyword = keyword_of(word)
        if not keyword or keyword != _fold(word):
            raise ValueError(f"{word!r} is not one word")
        if keyword in STOP_KEYWORDS:
            raise ValueError(f"{word!r} is a STOP keyword")
        folded.add(keyword)
    return frozenset(folded)


def decision_of(reply: Reply, resubscribe: frozenset[str]) -> Decision | None:
    """Opted out by a STOP (provider or text), opted in by a re-subscribe keyword, else None."""
    if reply.is_stop:
        source: DecisionSource = reply.stop_source or "text"
        return Decision(reply.sender, "opted_out", reply.received_at_ms, reply.reply_id, source)
    if reply.keyword in resubscribe:
        return Decision(reply.sender, "opted_in", reply.received_at_ms, reply.reply_id, "keyword")
    return None


def latest(decisions: Iterable[Decision]) -> dict[str, Decision]:
    """The winning decision per sender (what the ``optouts`` table holds after all of them)."""
    winners: dict[str, Decision] = {}
    for decision in decisions:
        held = winners.get(decision.sender)
        if held is None or decision.supersedes(held):
            winners[decision.sender] = decision
    return winners


def batch_decisions(replies: Iterable[Reply], resubscribe: frozenset[str]) -> list[Decision]:
    """One decision per sender of the batch (its latest), for one upsert each."""
    decided = (decision_of(reply, resubscribe) for reply in replies)
    return list(latest(d for d in decided if d is not None).values())


_HEX_PREFIX = re.compile(r"[0-9a-f]{5}")


def version(decision: Decision) -> int:
    """The decision's order as one UInt64, for ClickHouse's ReplacingMergeTree(version).

    ``since_ms << 21 | opted_out << 20 | 20 bits of reply_id``: the bits of
    reply_id are its first 5 hex digits (reply_ids are hex), else its first 20
    bits of UTF-8; so the order is :attr:`Decision.rank` except between two
    decisions of one sender in one millisecond, same status, whose reply_ids
    share that prefix.
    """
    head = decision.reply_id[:5]
    if _HEX_PREFIX.fullmatch(head):
        tie = int(head, 16)
    else:
        tie = int.from_bytes(decision.reply_id.encode()[:3].ljust(3, b"\0"), "big") >> 4
    opted_out = 1 if decision.status == "opted_out" else 0
    return (decision.since_ms << 21) | (opted_out << 20) | tie
