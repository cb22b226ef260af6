"""Keyword and opt-out (STOP) detection: pure functions on the whole reply text."""

from __future__ import annotations

import functools
import re
import unicodedata

from sms_replies.contract import StopSource

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


@functools.lru_cache(maxsize=1024)  # a reply's keyword and its STOP check fold the same text
def keyword_of(text: str) -> str:
    """First word of the text, uppercased, accents and punctuation stripped ('' if none)."""
    folded = _fold(text[:_HEAD])
    if len(text) > _HEAD and " " not in folded:
        folded = _fold(text)  # the first word may go on past the head
    return folded.split(" ", 1)[0] if folded else ""


def stop_source(text: str, message_type: str) -> StopSource | None:
    """Why this reply is an opt-out: the provider said so, or the text says so; None if not."""
    if message_type == "stop":
        return "provider"
    if keyword_of(text) in STOP_KEYWORDS:
        return "text"
    return None
