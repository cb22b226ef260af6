"""What the webhook sink puts on the wire, and what the receiver's answers mean.

Pure functions, no I/O: the JSON body of a batch, its signature, its
idempotency key, whether an HTTP status is worth retrying, and how long a
``Retry-After`` asks to wait. ``docs/webhook.md`` documents them for receivers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import orjson

from sms_replies.records import Reply
from sms_replies.schema import COLUMN_NAMES, to_row

SIGNATURE_HEADER = "X-SMS-Replies-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_PREFIX = "sha256="

#: 4xx answers that say "not now" or "not here yet", not "never these rows":
#: retried like a 5xx. 401/403/404 mean the endpoint or its credentials are
#: wrong, which the operator fixes; dead-lettering the whole stream meanwhile
#: would be the "wrong False" the sink contract warns about.
RETRIABLE_CLIENT_ERRORS: frozenset[int] = frozenset({401, 403, 404, 408, 409, 425, 429})


def encode_body(batch: Sequence[Reply], sent_at: datetime) -> bytes:
    """``{"replies": [row, ...]}``: every column of ``schema.COLUMNS`` per reply.

    Timestamps are RFC 3339 in UTC (``...Z``); ``ingested_at`` is ``sent_at``, the
    time this request was built. A reply whose fields have the wrong types raises
    one of ``schema.ROW_ERRORS`` (orjson's error is a TypeError).
    """
    rows = [dict(zip(COLUMN_NAMES, to_row(reply, sent_at), strict=True)) for reply in batch]
    return orjson.dumps({"replies": rows}, option=orjson.OPT_UTC_Z)


def sign(body: bytes, secret: bytes) -> str:
    """The ``X-SMS-Replies-Signature`` value: ``sha256=<hex HMAC-SHA256 of the exact body>``."""
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_is_valid(body: bytes, header: str | None, secret: bytes) -> bool:
    """What a receiver does (constant-time comparison); used by the tests' receivers."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


def idempotency_key(reply_ids: Collection[str]) -> str:
    """Same set of reply_ids, same key: hex SHA-256 of the sorted ids joined by newlines."""
    joined = "\n".join(sorted(set(reply_ids))).encode()
    return hashlib.sha256(joined).hexdigest()


def is_retriable_status(status: int) -> bool:
    """5xx, 3xx (a moved endpoint) and :data:`RETRIABLE_CLIENT_ERRORS`; other 4xx are final."""
    return not 400 <= status < 500 or status in RETRIABLE_CLIENT_ERRORS


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds asked by ``Retry-After`` (delta-seconds or HTTP date); None if absent or garbled."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
