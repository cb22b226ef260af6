"""Vonage-style callback signatures (pure, no I/O).

When signing is enabled on the provider's side, each callback carries ``sig``
(and ``timestamp``, ``nonce``). The signed string is built from every other
parameter: drop ``sig`` (and our own ``token``, which the provider does not
know about; the ingress also takes our URL's ``campaign`` and ``tag`` out of
the query before the check), sort by key, replace ``&`` and ``=`` inside values by ``_``, and
join as ``&k=v&k2=v2`` (with the leading ``&``). Then:

* ``md5hash``: hex MD5 of (string + secret);
* ``md5`` | ``sha1`` | ``sha256`` | ``sha512``: hex HMAC of the string, keyed
  with the secret.

Values are the decoded parameter values (as the provider sent them before
URL-encoding). JSON bodies may carry non-strings: numbers are written as in
Python (``123``, ``1.5``), ``true``/``false``/empty for booleans and null,
arrays and objects as compact JSON.

Keys are not escaped by the scheme, so a key holding ``&`` or ``=`` could carry
several signed parameters at once (``concat=true&concat-part`` = ``2`` signs
like ``concat`` = ``true`` and ``concat-part`` = ``2`` but parses as neither):
such keys are refused before anything is compared.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

import orjson

from sms_replies.errors import SmsRepliesError

SignatureMethod = Literal["md5hash", "md5", "sha1", "sha256", "sha512"]
METHODS: Final[tuple[str, ...]] = get_args(SignatureMethod)

# Never part of the signed string: the signature itself and our URL secret.
UNSIGNED: Final = frozenset({"sig", "token"})
MAX_TIMESTAMP_DIGITS: Final = 12


class SignatureError(SmsRepliesError):
    """The callback's signature is missing, wrong or too old; ``reason`` is safe to answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = ""
    elif isinstance(value, int | float):
        text = str(value)
    else:
        text = orjson.dumps(value).decode()
    return text.replace("&", "_").replace("=", "_")


def signing_string(params: Mapping[str, Any]) -> str:
    """The string the provider signed: ``&k=v&k2=v2`` over the sorted signed params."""
    return "".join(f"&{key}={_value(params[key])}" for key in sorted(params) if key not in UNSIGNED)


def compute_signature(params: Mapping[str, Any], secret: str, method: SignatureMethod) -> str:
    """Lower-case hex signature of ``params`` (``sig`` and ``token`` ignored)."""
    if method not in METHODS:
        raise ValueError(f"unknown signature method {method!r}")
    message = signing_string(params).encode()
    key = secret.encode()
    if method == "md5hash":
        return hashlib.md5(message + key).hexdigest()
    return hmac.new(key, message, method).hexdigest()


def verify_signature(
    params: Mapping[str, Any],
    secret: str,
    method: SignatureMethod,
    *,
    now: float,
    max_skew: float,
) -> None:
    """Raise :class:`SignatureError` unless ``sig`` is right and ``timestamp`` is fresh.

    The comparison is constant-time; ``timestamp`` (UNIX seconds) must be within
    ``max_skew`` seconds of ``now`` either way, so that a captured callback
    cannot be replayed later.
    """
    given = params.get("sig")
    if not isinstance(given, str) or not given:
        raise SignatureError("missing signature")
    if any("&" in key or "=" in key for key in params):
        raise SignatureError("parameter name with '&' or '=' cannot be signed")
    expected = compute_signature(params, secret, method)
    if not hmac.compare_digest(given.strip().lower().encode("utf-8", "replace"), expected.encode()):
        raise SignatureError("wrong signature")
    timestamp = _timestamp(params.get("timestamp"))
    if abs(now - timestamp) > max_skew:
        raise SignatureError("timestamp outside the accepted window")


def _timestamp(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if (
        isinstance(raw, str)
        and raw.isascii()
        and raw.isdigit()
        and len(raw) <= MAX_TIMESTAMP_DIGITS
    ):
        return int(raw)
    if raw is None:
        raise SignatureError("missing timestamp")
    raise SignatureError("invalid timestamp")
