"""What SMS Partner's answers to ``stop-sms/add`` mean: pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from sms_replies_smspartner.protocol import (
    Verdict,
    backoff,
    classify,
    pushable,
    request_body,
    retry_after_seconds,
)


def answer(**fields: object) -> bytes:
    return orjson.dumps(fields)


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, answer(success=True, code=200, stopId=300), Verdict.ADDED),
        # Code 3 is "already in the stop list" whatever the HTTP status: done.
        (200, answer(success=False, code=3, message="x"), Verdict.ALREADY_LISTED),
        (400, answer(success=False, code=3, message="x"), Verdict.ALREADY_LISTED),
        (409, answer(success=False, code=3), Verdict.ALREADY_LISTED),
        # The number itself: final, the reply is dead-lettered.
        (200, answer(success=False, code=9, message="x"), Verdict.REJECTED),
        (400, answer(success=False, code=9, message="x"), Verdict.REJECTED),
        (400, answer(success=False, code=2), Verdict.REJECTED),
        (400, b"<html>bad request</html>", Verdict.REJECTED),
        (422, b"", Verdict.REJECTED),
        # The key: the operator's to fix, never the reply's fault.
        (200, answer(success=False, code=10, message="x"), Verdict.CREDENTIALS),
        (400, answer(success=False, code=1), Verdict.CREDENTIALS),
        (401, b"", Verdict.CREDENTIALS),
        (403, b"forbidden", Verdict.CREDENTIALS),
        # Not now.
        (429, b"", Verdict.RETRY),
        (408, b"", Verdict.RETRY),
        (500, answer(success=False, code=9), Verdict.RETRY),
        (502, b"<html>bad gateway</html>", Verdict.RETRY),
        (503, b"", Verdict.RETRY),
        # A 2xx that is no success: an account problem or a proxy's page, retried.
        (200, answer(success=False, code=20, message="account deactivated"), Verdict.RETRY),
        (200, b"<html>ok</html>", Verdict.RETRY),
        (200, answer(success="true", code=200), Verdict.RETRY),
        (302, b"", Verdict.RETRY),
    ],
)
def test_classify(status: int, body: bytes, verdict: Verdict) -> None:
    assert classify(status, body).verdict is verdict


def test_the_detail_names_status_and_code_never_the_message() -> None:
    got = classify(400, answer(success=False, code=9, message="+33612345678 est invalide"))
    assert got.detail == "HTTP 400, code 9 (invalid phone number)"
    assert classify(200, answer(success=True, code=200, stopId=42)).stop_id == 42


def test_request_body_is_the_documented_json() -> None:
    assert orjson.loads(request_body("k3y", "+33612345678")) == {
        "apiKey": "k3y",
        "phoneNumber": "+33612345678",
    }


@pytest.mark.parametrize(
    ("sender", "ok"),
    [
        ("+33612345678", True),
        ("+4915112345678", True),
        ("33612345678", False),
        ("0612345678", False),
        ("h:" + "a" * 64, False),
        ("+0612345678", False),
        ("+33 6 12 34 56 78", False),
        ("", False),
    ],
)
def test_pushable(sender: str, ok: bool) -> None:
    assert pushable(sender) is ok


def test_retry_after() -> None:
    now = datetime(2026, 12, 2, 1, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 02 Dec 2026 01:00:10 GMT", now) == 10.0
    assert retry_after_seconds("Wed, 02 Dec 2026 00:59:00 GMT", now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_backoff_doubles_to_its_ceiling_and_caps_retry_after() -> None:
    waits = [backoff(n, initial=0.5, ceiling=3.0) for n in range(1, 6)]
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff(1, initial=0.5, ceiling=3.0, retry_after=7.0) == 7.0
    assert backoff(1, initial=0.5, ceiling=3.0, retry_after=900.0, retry_after_max=60.0) == 60.0
