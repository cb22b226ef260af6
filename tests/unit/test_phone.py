"""to_e164: the fast path for French numbers answers exactly what phonenumbers does."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sms_replies.phone import NotAPhoneNumber, _french_e164, to_e164


def _by_phonenumbers(raw: str, region: str = "FR") -> str | None:
    """to_e164 without its fast path (the reference)."""
    text = raw.strip()
    if text.isdigit() and not text.startswith("0"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _answer(raw: str, region: str = "FR") -> str | None:
    try:
        return to_e164(raw, region)
    except NotAPhoneNumber:
        return None


DIGITS = st.text(alphabet="0123456789", min_size=0, max_size=12)
PREFIXES = st.sampled_from(["33", "+33", "0", "330", "+330", "0033", "", "+", "3", "00"])


@given(prefix=PREFIXES, digits=DIGITS, region=st.sampled_from(["FR", "BE", "US"]))
@example(prefix="33", digits="612345678", region="FR")
@example(prefix="0", digits="612345678", region="FR")
@example(prefix="0", digits="612345678", region="BE")
@example(prefix="330", digits="612345678", region="FR")
@example(prefix="33", digits="٦١٢٣٤٥٦٧٨", region="FR")  # Arabic-Indic digits
def test_same_answer_as_phonenumbers(prefix: str, digits: str, region: str) -> None:
    raw = prefix + digits
    assert _answer(raw, region) == _by_phonenumbers(raw, region)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("33612345678", "+33612345678"),
        ("+33756781234", "+33756781234"),
        ("0612345678", "+33612345678"),
        (" 33612345678 ", "+33612345678"),
    ],
)
def test_french_numbers_take_the_fast_path(raw: str, expected: str) -> None:
    assert _french_e164(raw.strip(), "FR") == expected
    assert to_e164(raw) == expected


@pytest.mark.parametrize("raw", ["330612345678", "3361234567", "+4915112345678", "0612345678"])
def test_others_go_to_phonenumbers(raw: str) -> None:
    region = "DE" if raw == "0612345678" else "FR"
    assert _french_e164(raw, region) is None


@given(
    prefix=st.sampled_from(["33", "+33", "0", " +33"]),
    digits=st.text(alphabet="0123456789", min_size=9, max_size=9),
)
def test_nine_digits_after_the_prefix(prefix: str, digits: str) -> None:
    raw = prefix + digits
    assert _answer(raw) == _by_phonenumbers(raw)
