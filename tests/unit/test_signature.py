"""Vonage-style signatures, checked against vectors computed here by hand.

The expected digests are computed with hashlib/hmac over a string written out
literally in each test, never by the function under test.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from sms_replies.ingest.signature import (
    SignatureError,
    compute_signature,
    signing_string,
    verify_signature,
)

SECRET = "my-s3cret"
NOW = 1_700_000_000
PARAMS: dict[str, Any] = {
    "msisdn": "33612345678",
    "to": "33756781234",
    "messageId": "0A0000001234",
    "text": "a=b & c",
    "type": "text",
    "timestamp": str(NOW),
    "nonce": "4d0e7f3e",
    "token": "our-url-secret",  # ours, not the provider's: never signed
}
# Sorted by key (upper case sorts first), '&' and '=' in values -> '_', leading '&'.
SIGNED = (
    "&messageId=0A0000001234"
    "&msisdn=33612345678"
    "&nonce=4d0e7f3e"
    "&text=a_b _ c"
    "&timestamp=1700000000"
    "&to=33756781234"
    "&type=text"
)


def expected(method: str, signed: str = SIGNED, secret: str = SECRET) -> str:
    if method == "md5hash":
        return hashlib.md5((signed + secret).encode()).hexdigest()
    return hmac.new(secret.encode(), signed.encode(), method).hexdigest()


def test_signing_string_sorts_drops_sig_and_token_and_escapes_values() -> None:
    assert signing_string({**PARAMS, "sig": "whatever"}) == SIGNED


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
def test_signature_matches_independent_vectors(method: Any) -> None:
    assert compute_signature(PARAMS, SECRET, method) == expected(method)


def test_md5hash_is_md5_of_string_then_secret_known_vector() -> None:
    # Fully literal: md5("&a=1&b=2" + "k").
    digest = hashlib.md5(b"&a=1&b=2k").hexdigest()
    assert compute_signature({"b": "2", "a": "1"}, "k", "md5hash") == digest


def test_non_string_json_values_are_signed_as_text() -> None:
    params = {"message_id": 123, "flag": True, "none": None, "ratio": 1.5, "nested": {"a": 1}}
    signed = '&flag=true&message_id=123&nested={"a":1}&none=&ratio=1.5'
    assert signing_string(params) == signed
    assert compute_signature(params, SECRET, "sha256") == expected("sha256", signed)


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
def test_verify_accepts_a_right_signature_any_case(method: Any) -> None:
    for sig in (expected(method), expected(method).upper()):
        verify_signature({**PARAMS, "sig": sig}, SECRET, method, now=NOW + 10, max_skew=300)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"sig": None}, "missing signature"),
        ({"sig": ""}, "missing signature"),
        ({"sig": "0" * 64}, "wrong signature"),
        ({"sig": "é" * 64}, "wrong signature"),
        ({"text": "a=b & d"}, "wrong signature"),  # tampered after signing
        ({"extra": "1"}, "wrong signature"),  # parameter added after signing
    ],
)
def test_verify_refuses_missing_or_wrong_signatures(change: dict[str, Any], reason: str) -> None:
    params = {**PARAMS, "sig": expected("sha256")}
    params.update(change)
    params = {k: v for k, v in params.items() if v is not None}
    with pytest.raises(SignatureError) as caught:
        verify_signature(params, SECRET, "sha256", now=NOW, max_skew=300)
    assert caught.value.reason == reason


def test_verify_refuses_a_right_signature_with_another_secret() -> None:
    params = {**PARAMS, "sig": expected("sha256", secret="other")}
    with pytest.raises(SignatureError, match="wrong signature"):
        verify_signature(params, SECRET, "sha256", now=NOW, max_skew=300)


@pytest.mark.parametrize("offset", [301, -301, 86_400])
def test_verify_refuses_a_replay_outside_the_window(offset: int) -> None:
    params = {**PARAMS, "sig": expected("sha256")}
    with pytest.raises(SignatureError, match="timestamp outside"):
        verify_signature(params, SECRET, "sha256", now=NOW + offset, max_skew=300)
    verify_signature(params, SECRET, "sha256", now=NOW + offset, max_skew=abs(offset))


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [(None, "missing timestamp"), ("yesterday", "invalid timestamp"), ("1" * 13, "invalid")],
)
def test_verify_needs_a_numeric_timestamp(timestamp: str | None, reason: str) -> None:
    params = {k: v for k, v in PARAMS.items() if k != "timestamp"}
    signed = SIGNED.replace("&timestamp=1700000000", "")
    if timestamp is not None:
        params["timestamp"] = timestamp
        signed = signed.replace("&to=", f"&timestamp={timestamp}&to=")
    params["sig"] = expected("sha256", signed)
    with pytest.raises(SignatureError, match=reason):
        verify_signature(params, SECRET, "sha256", now=NOW, max_skew=300)


def test_unknown_method_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown signature method"):
        compute_signature(PARAMS, SECRET, "crc32")  # type: ignore[arg-type]


def test_a_signed_callback_repacked_into_one_key_is_refused() -> None:
    # "to=33756781234&type" = "text" gives the very string that was signed,
    # so the captured signature matches, but the fields parse as neither.
    repacked = {k: v for k, v in PARAMS.items() if k not in ("to", "type")}
    repacked["to=33756781234&type"] = "text"
    assert signing_string(repacked) == SIGNED
    repacked["sig"] = expected("sha256")
    with pytest.raises(SignatureError) as caught:
        verify_signature(repacked, SECRET, "sha256", now=NOW, max_skew=300)
    assert caught.value.reason == "parameter name with '&' or '=' cannot be signed"


def test_a_key_holding_an_equals_sign_is_refused() -> None:
    params = {**PARAMS, "a=b": "c"}
    params["sig"] = hmac.new(SECRET.encode(), signing_string(params).encode(), "sha256").hexdigest()
    with pytest.raises(SignatureError) as caught:
        verify_signature(params, SECRET, "sha256", now=NOW, max_skew=300)
    assert caught.value.reason == "parameter name with '&' or '=' cannot be signed"
