"""Pseudonymised sender numbers: a keyed hash instead of the number in clear.

With ``SMS_REPLIES_PSEUDONYMIZE_KEY`` set, the sender is replaced by ``h:`` +
hex HMAC-SHA256(key, E.164 number) **at the ingress edge**, before anything is
published: the raw topic, the rejects audit, the worker's state and changelog,
the replies, every store and every id derived from the sender (reassembly key,
Kafka key, ``reply_id``) only ever see the pseudonym. The same number always
gives the same value (analysts can still count distinct senders and follow one
sender's replies), and without the key the number cannot be recovered by
hashing every possible number (unlike a plain hash). Keep the key secret and
stable: changing it splits every sender in two.

Pure functions, no I/O: safe to call from the ingress's and the worker's hot paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import orjson

from sms_replies.phone import DEFAULT_REGION, NotAPhoneNumber, to_e164
from sms_replies.records import RawPart, Reply

PREFIX: Final = "h:"
#: Callback parameters that carry the sender's number (long number, short number).
SENDER_PARAMS: Final = frozenset({"msisdn", "phone_number"})
#: Stands for a request body that could not be read as parameters (so not scrubbed).
WITHHELD: Final = "[withheld: not readable as parameters, may hold a number]"


def pseudonymize(number: str, key: bytes) -> str:
    """``h:`` + hex HMAC-SHA256 of ``number`` (E.164, as stored) under ``key``.

    Deterministic; a value that is already pseudonymised is returned unchanged,
    so applying it twice (a replayed record) does no harm.
    """
    if not key:
        raise ValueError("the pseudonymisation key is empty")
    if is_pseudonym(number):
        return number
    digest = hmac.new(key, number.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest


def is_pseudonym(value: str) -> bool:
    return (
        value.startswith(PREFIX)
        and len(value) == len(PREFIX) + 64
        and all(c in "0123456789abcdef" for c in value[len(PREFIX) :])
    )


def pseudonymize_reply(reply: Reply, key: bytes | None) -> Reply:
    """``reply`` with its sender pseudonymised; unchanged when ``key`` is None (setting unset)."""
    if key is None:
        return reply
    return dataclasses.replace(reply, sender=pseudonymize(reply.sender, key))


def sender_forms(number: str, key: bytes | None) -> tuple[str, ...]:
    """Every way ``number`` may be stored: in clear and, with a key, pseudonymised.

    Both, because rows written before the key was set keep the number in clear.
    """
    if key is None:
        return (number,)
    return (number, pseudonymize(number, key))


def e164(raw: str, region: str = DEFAULT_REGION) -> str | None:
    """``raw`` in E.164 (``33612…``, ``+33612…``, ``0612…``, ``06 12 …``), None if not a number.

    The ingress's rule (:func:`sms_replies.phone.to_e164`).
    """
    try:
        return to_e164(raw, region)
    except NotAPhoneNumber:
        return None


def pseudonymize_any(raw: str, key: bytes) -> str:
    """The pseudonym of a number given in any format (of the raw text if it is no number)."""
    if is_pseudonym(raw):
        return raw
    return pseudonymize(e164(raw) or raw.strip(), key)


def pseudonymize_part(part: RawPart, key: bytes | None) -> RawPart:
    """``part`` with its sender pseudonymised; unchanged when ``key`` is None."""
    if key is None or is_pseudonym(part.sender):
        return part
    return dataclasses.replace(part, sender=pseudonymize(part.sender, key))


def scrub_params(params: Mapping[str, Any], key: bytes | None) -> dict[str, Any]:
    """Request parameters with the sender's number pseudonymised (for the rejects audit)."""
    if key is None:
        return dict(params)
    return {
        name: pseudonymize_any(str(value), key) if name in SENDER_PARAMS else value
        for name, value in params.items()
    }


def scrub_pairs(pairs: Iterable[tuple[str, str]], key: bytes | None) -> list[tuple[str, str]]:
    """Query parameters (name, value) with the sender's number pseudonymised."""
    if key is None:
        return list(pairs)
    return [
        (name, pseudonymize_any(value, key) if name in SENDER_PARAMS else value)
        for name, value in pairs
    ]


def scrub_body(body: bytes | None, content_type: str, key: bytes | None) -> bytes | None:
    """A request body kept for audit, its sender's number pseudonymised.

    A UTF-8 form or JSON object is re-encoded with :func:`scrub_params`;
    anything else (multipart, malformed, another charset) is withheld: a number
    in it could not be found.
    """
    if key is None or not body:
        return body
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return WITHHELD.encode()
    if content_type == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            return WITHHELD.encode()
        return urlencode(scrub_pairs(pairs, key)).encode()
    if content_type == "application/json":
        try:
            fields = orjson.loads(text)
        except orjson.JSONDecodeError:
            return WITHHELD.encode()
        if isinstance(fields, dict):
            return orjson.dumps(scrub_params(fields, key))
    return WITHHELD.encode()


def key_bytes(secret: Any) -> bytes | None:
    """The key of a ``SecretStr | None`` setting as bytes (None: pseudonymisation off)."""
    if secret is None:
        return None
    value: str = secret.get_secret_value()
    return value.encode("utf-8") if value else None
