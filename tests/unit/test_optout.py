"""Keyword and STOP detection (pure)."""

from __future__ import annotations

import pytest

from sms_replies.optout import keyword_of, stop_source


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
