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
    if text.isdigit() and not text.startswith("0"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise NotAPhoneNumber("not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise NotAPhoneNumber("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
