"""Percent-encoded parameters (query strings, form bodies) decoded without U+FFFD (pure, no I/O).

aiohttp and yarl decode ``%E9`` that is not UTF-8 into U+FFFD, losing the
letter for good. SMS Partner and Vonage send UTF-8; a gateway that sends
ISO-8859-1 gets its letters read as it meant them: each key and value is
decoded as UTF-8 when it is valid UTF-8, else as Windows-1252, the superset of
ISO-8859-1 that the WHATWG Encoding standard (and every browser) uses for the
labels ``latin1`` and ``iso-8859-1``. Every byte string decodes one way or the
other, so nothing is refused for its encoding and nothing is stored with U+FFFD.
A body that declares another charset is decoded with it, strictly.
"""

from __future__ import annotations

import codecs
from typing import Final
from urllib.parse import unquote_to_bytes

from sms_replies.errors import SmsRepliesError

# Bytes Python's cp1252 leaves undefined; WHATWG maps them to the C1 controls.
_CP1252_UNDEFINED: Final = frozenset(b"\x81\x8d\x8f\x90\x9d")
_UTF8_NAMES: Final = frozenset({"utf-8", "utf8"})


class FormDecodeError(SmsRepliesError, ValueError):
    """The bytes cannot be read with the declared charset; the message is safe to answer."""


def windows_1252(raw: bytes) -> str:
    """``raw`` as Windows-1252 per WHATWG (the five undefined bytes as C1 controls)."""
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return "".join(
            chr(byte) if byte in _CP1252_UNDEFINED else bytes((byte,)).decode("cp1252")
            for byte in raw
        )


def decode_text(raw: bytes) -> tuple[str, bool]:
    """UTF-8 if it is valid UTF-8, else Windows-1252; and whether the fallback was used."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return windows_1252(raw), True


def _split(raw: bytes) -> list[tuple[bytes, bytes]]:
    # urllib's parse_qsl refuses raw bytes beyond ASCII; they are kept here, as sent.
    pairs = []
    for field in raw.split(b"&"):
        if field:
            key, _, value = field.partition(b"=")
            pairs.append(
                (
                    unquote_to_bytes(key.replace(b"+", b" ")),
                    unquote_to_bytes(value.replace(b"+", b" ")),
                )
            )
    return pairs


def parse_form(raw: bytes, charset: str | None = None) -> tuple[list[tuple[str, str]], int]:
    """``k=v&k2=v2`` (``+`` is a space, blank values kept) as decoded pairs.

    Returns the pairs and how many keys and values were not UTF-8 (read as
    Windows-1252). A declared ``charset`` other than UTF-8 is used as is, and
    raises :class:`FormDecodeError` for an unknown charset or invalid bytes.
    """
    pairs = _split(raw)
    if charset is not None and charset.lower() not in _UTF8_NAMES:
        try:
            codec = codecs.lookup(charset).name
            return [(k.decode(codec), v.decode(codec)) for k, v in pairs], 0
        except LookupError:
            raise FormDecodeError("unknown charset") from None
        except UnicodeDecodeError:
            raise FormDecodeError(f"not valid {codec}") from None
    decoded: list[tuple[str, str]] = []
    fallbacks = 0
    for raw_key, raw_value in pairs:
        key, key_fallback = decode_text(raw_key)
        value, value_fallback = decode_text(raw_value)
        fallbacks += key_fallback + value_fallback
        decoded.append((key, value))
    return decoded, fallbacks
