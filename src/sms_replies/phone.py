"""Phone numbers: the one way every part of the package reads a number as E.164.

The ingress (:mod:`sms_replies.ingest.parsing`), the sender lookups
(:mod:`sms_replies.privacy`) and campaign recipients
(:mod:`sms_replies.analytics.campaigns`) all call :func:`to_e164`, so a number
typed by an analyst finds what the provider sent. Pure, no I/O.
"""

from __future__ import annotations

from typing import Final

import phonenumbers

from sms_replies.errors import SmsRepliesError

DEFAULT_REGION: Final = "FR"  # national numbers (06...) are French: SMS Partner is French


class NotAPhoneNumber(SmsRepliesError, ValueError):
    """``raw`` is no (possible) phone number; the message says which, safe to answer."""


def to_e164(raw: str, region: str = DEFAULT_REGION) -> str:
    """``33612…``, ``+33612…``, ``0612…``, ``06 12 …`` -> ``+33612…``.

    Digits without a leading 0 are international (Vonage style: no '+');
    a leading 0 is national in ``region``.
    """
    text = raw.strip()
    french = _french_e164(text, region)
    if french is not None:
        return french
    if text.isdigit() and not text.startswith("0"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise NotAPhoneNumber("not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise NotAPhoneNumber("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _french_e164(text: str, region: str) -> str | None:
    """The E.164 form of a French number written ``33`` / ``+33`` / ``0`` + 9 digits
    (not 0 first), else None: what phonenumbers answers for those, at a 40th of its
    cost (the ingress parses two numbers per callback; the provider is French).

    French numbers have 9 digits after the country code (their only possible
    length) and ``0`` as national prefix, so nothing else applies to them;
    tests/unit/test_phone.py checks it against phonenumbers.
    """
    if len(text) == 11 and text.startswith("33"):
        national = text[2:]
    elif len(text) == 12 and text.startswith("+33"):
        national = text[3:]
    elif len(text) == 10 and text.startswith("0") and region == "FR":
        national = text[1:]
    else:
        return None
    if national.isascii() and national.isdigit() and national[0] != "0":
        return "+33" + national
    return None
