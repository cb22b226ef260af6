"""Keyword and STOP detection (pure)."""

from __future__ import annotations

import gc
import re
import tracemalloc
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_replies.optout import MAX_KEYWORD, _first_word_of_head, _fold, keyword_of, stop_source


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("Oui", "OUI"),
        ("  non merci", "NON"),
        ("Stop.", "STOP"),
        ("désabonner", "DESABONNER"),
        ("Arrêt!", "ARRET"),
        ("¿Qué?", "QUE"),
        ("...", ""),
        ("", ""),
        ("😀 super", "SUPER"),
    ],
)
def test_keyword_is_first_word_folded(text: str, keyword: str) -> None:
    assert keyword_of(text) == keyword


@pytest.mark.parametrize(
    "text", ["STOP", "Stop.", "stop merci", "STOP SMS", "ARRET", "arrêt", "Désabonner svp"]
)
def test_stop_texts_are_opt_outs(text: str) -> None:
    assert stop_source(text, "text") == "text"


@pytest.mark.parametrize("text", ["Oui", "je ne veux pas arrêter", "stopper", "", "non-stop"])
def test_other_texts_are_not(text: str) -> None:
    assert stop_source(text, "text") is None


def test_provider_stop_wins_whatever_the_text() -> None:
    assert stop_source("", "stop") == "provider"
    assert stop_source("merci", "stop") == "provider"


def _keyword_of_whole_text(text: str) -> str:
    folded = _fold(text)
    return folded.split(" ", 1)[0][:MAX_KEYWORD] if folded else ""


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_keyword_from_the_head_of_the_text_is_the_keyword_of_the_whole_text(text: str) -> None:
    assert keyword_of(text) == _keyword_of_whole_text(text)


@given(st.text(alphabet="aéE\u0301 .!-ﬁ①\u00a0x", min_size=60, max_size=70))
def test_keyword_when_the_head_ends_inside_or_next_to_a_word(text: str) -> None:
    assert keyword_of(text) == _keyword_of_whole_text(text)


def _fold_by_decomposition(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_only = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"[^A-Z0-9]+", " ", ascii_only.upper()).strip()


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=100) | st.text(max_size=100))
def test_the_ascii_fold_is_the_fold_by_decomposition(text: str) -> None:
    assert _fold(text) == _fold_by_decomposition(text)


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=70) | st.text(max_size=70))
def test_the_first_word_of_a_head_is_the_first_word_of_its_fold(head: str) -> None:
    folded = _fold_by_decomposition(head)
    assert _first_word_of_head(head) == (folded.split(" ", 1)[0], " " in folded)


def test_the_keyword_cache_holds_heads_not_whole_texts() -> None:
    """1,024 distinct 8,000-character replies leave at most a few hundred KiB cached."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(1024):  # distinct heads: the cache fills
            assert keyword_of(f"{n:04d} " + "é" * 8000) == f"{n:04d}"
        gc.collect()  # the texts are gone: what remains is what the cache keeps
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Whole texts would keep 1,024 x 16 KB = 16 MiB alive; heads about 200 KiB.
    assert retained < 512 * 1024, retained


def test_a_keyword_is_at_most_64_characters() -> None:
    assert keyword_of("Ⅷ" * 2000) == "VIII" * 16  # folding may lengthen a word
    assert keyword_of("x" * 100 + " oui") == "X" * 64
