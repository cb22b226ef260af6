"""Keyword and opt-out (STOP) detection: pure functions on the whole reply text."""

from __future__ import annotations

import functools
import re
import unicodedata

from sms_replies.records import StopSource

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


def _fold(text: str) -> str:
    """Uppercase, strip accents and turn punctuation into spaces."""
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
    folded = _fold(head)
    return (folded.split(" ", 1)[0] if folded else ""), " " in folded


def stop_source(text: str, message_type: str) -> StopSource | None:
    """Why this reply is an opt-out: the provider said so, or the text says so; None if not."""
    if message_type == "stop":
        return "provider"
    if keyword_of(text) in STOP_KEYWORDS:
        return "text"
    return None
