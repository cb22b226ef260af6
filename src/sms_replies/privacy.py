"""Pseudonymised sender numbers: a keyed hash instead of the number in clear.

With ``SMS_REPLIES_PSEUDONYMIZE_KEY`` set, the ``sender`` of each reply is
stored as ``h:`` + hex HMAC-SHA256(key, E.164 number): the same number always
gives the same value (analysts can still count distinct senders and follow one
sender's replies), and without the key the number cannot be recovered by
hashing every possible number (unlike a plain hash). Keep the key secret and
stable: changing it splits every sender in two.

Pure functions, no I/O: safe to call from the worker's hot path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from typing import Final

from sms_replies.contract import Reply

PREFIX: Final = "h:"


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
