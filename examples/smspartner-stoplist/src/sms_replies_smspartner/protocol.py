"""SMS Partner's "add a number to the stop list" call: the request, and what an answer means.

Pure functions, no I/O. The endpoint, as SMS Partner documents it
(docpartner.dev, "Replies / Opt-outs Management > Add Number to SMS Stop List"):

* ``POST <base>/stop-sms/add`` (base ``https://api.smspartner.fr/v1``), a JSON
  body ``{"apiKey": "...", "phoneNumber": "+336..."}``; the number in national
  (``06...``, French numbers only) or international (``+...``) format.
* Success: ``{"success": true, "code": 200, "stopId": 300}``.
* Error: ``{"success": false, "code": 10, "message": "..."}`` with the codes
  1 (API key required), 2 (phone number required), 3 (number already in the
  stop list), 9 (invalid phone number), 10 (incorrect API key).

The HTTP status of an error answer is not documented, so an answer is read by
its ``code`` first and its HTTP status second (:func:`classify`). Code 3 is
not an error here: the number is on the list, which is what was asked, and it
is what makes a repeated add harmless. (The French page's table lists code 3
as "message ID required", a copy of another endpoint's table: this request
has no message ID, and the English page and the send API's own code 15 say
"already in the list".)
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import orjson

DEFAULT_BASE_URL: Final = "https://api.smspartner.fr/v1"
ADD_PATH: Final = "stop-sms/add"

CODE_OK: Final = 200
CODE_KEY_REQUIRED: Final = 1
CODE_NUMBER_REQUIRED: Final = 2
CODE_ALREADY_LISTED: Final = 3
CODE_INVALID_NUMBER: Final = 9
CODE_INCORRECT_KEY: Final = 10

#: What each documented code means, for logs and dead-letter reasons.
CODES: Final = {
    CODE_KEY_REQUIRED: "API key required",
    CODE_NUMBER_REQUIRED: "phone number required",
    CODE_ALREADY_LISTED: "number already in the stop list",
    CODE_INVALID_NUMBER: "invalid phone number",
    CODE_INCORRECT_KEY: "incorrect API key",
}

#: The senders the sink can push: E.164 as the pipeline stores them (``+`` and digits).
E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
#: A sender pseudonymised at the ingress (``SMS_REPLIES_PSEUDONYMIZE_KEY``): no number left.
PSEUDONYM_PREFIX: Final = "h:"


class Verdict(enum.Enum):
    ADDED = "added"  # on the list now
    ALREADY_LISTED = "already_listed"  # was on the list: as good as added
    RETRY = "retry"  # not now: timeout-like, 429, 5xx, an unexpected answer
    CREDENTIALS = "credentials"  # the API key is missing or wrong: retried, the operator fixes it
    REJECTED = "rejected"  # never this number: dead-letter the reply


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    #: Safe to log: HTTP status and provider code, never the number, the key or the body.
    detail: str
    stop_id: int | None = None


def request_body(api_key: str, number: str) -> bytes:
    """The JSON body of one add."""
    return orjson.dumps({"apiKey": api_key, "phoneNumber": number})


def pushable(sender: str) -> bool:
    """A sender the API can take: E.164 (``+33612345678``)."""
    return E164.fullmatch(sender) is not None


def is_pseudonym(sender: str) -> bool:
    return sender.startswith(PSEUDONYM_PREFIX)


def _fields(body: bytes) -> tuple[bool | None, int | None, int | None]:
    """(success, code, stopId) of a JSON answer; Nones where absent or not JSON."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    success = data.get("success")
    code = data.get("code")
    stop_id = data.get("stopId")
    return (
        success if isinstance(success, bool) else None,
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        stop_id if isinstance(stop_id, int) and not isinstance(stop_id, bool) else None,
    )


def classify(status: int, body: bytes) -> Answer:
    """What one HTTP answer of ``stop-sms/add`` means for the number sent.

    Order: the documented codes first (whatever the HTTP status), then the status:
    401/403 are credentials (retried: dead-lettering every STOP until the operator
    fixes a key would be the contract's "wrong False"); 408, 425, 429 and 5xx are
    retried; any other 4xx refuses this number for good; a 2xx without
    ``success: true`` or a code we do not know is retried (an account problem, a
    proxy's page: not the number's fault).
    """
    success, code, stop_id = _fields(body)
    where = f"HTTP {status}"
    if code is not None:
        where += f", code {code} ({CODES.get(code, 'undocumented')})"
    if 200 <= status < 300 and success is True:
        return Answer(Verdict.ADDED, where, stop_id)
    if code == CODE_ALREADY_LISTED:
        return Answer(Verdict.ALREADY_LISTED, where)
    if code in (CODE_KEY_REQUIRED, CODE_INCORRECT_KEY) or status in (401, 403):
        return Answer(Verdict.CREDENTIALS, where)
    if status in (408, 425, 429) or status >= 500:
        return Answer(Verdict.RETRY, where)
    if code in (CODE_NUMBER_REQUIRED, CODE_INVALID_NUMBER):
        return Answer(Verdict.REJECTED, where)
    if 400 <= status < 500:
        return Answer(Verdict.REJECTED, where)
    return Answer(Verdict.RETRY, where + ": unexpected answer")


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` asks (delta-seconds or HTTP date); None if absent or garbled."""
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


def backoff(
    attempt: int,
    *,
    initial: float,
    ceiling: float,
    retry_after: float | None = None,
    retry_after_max: float = 120.0,
) -> float:
    """Seconds before try ``attempt + 1``: ``Retry-After`` when given (capped), else doubling."""
    if retry_after is not None:
        return min(retry_after, retry_after_max)
    return float(min(ceiling, initial * 2 ** min(attempt - 1, 30)))
