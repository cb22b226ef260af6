"""Validate and normalise one SMS Partner callback into a :class:`RawPart` (pure, no I/O).

Two shapes reach the same URL (see docs/callbacks.md):

* long number, Vonage-style: ``msisdn``, ``to``, ``messageId``, ``text``, ``type``,
  ``message-timestamp`` and, on parts of a long SMS, ``concat``, ``concat-ref``,
  ``concat-total``, ``concat-part``;
* short number: ``type`` (``response`` | ``stop``), ``phone_number``, ``text``,
  ``message_id``.

Values may be strings or numbers whatever the encoding (query string, form, JSON).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal, NamedTuple, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from sms_replies.bounds import (
    MAX_ATTRIBUTION,
    MAX_ID,
    MAX_PHONE,
    MAX_TIMESTAMP,
    Bounds,
    is_attribution,
)
from sms_replies.errors import InvalidCallback
from sms_replies.phone import NotAPhoneNumber, to_e164
from sms_replies.records import Concat, RawPart, provider_time_ms

__all__ = [
    "MAX_ID",
    "MAX_PHONE",
    "MAX_TEXT",
    "NO_ATTRIBUTION",
    "Attribution",
    "parse_attribution",
    "parse_callback",
]

MAX_TEXT: Final = Bounds().max_single_text  # the default; a part's is lower (see bounds)
_DEFAULT_BOUNDS: Final = Bounds()

# Parameters that carry our own authentication, never part of the callback.
AUTH_PARAMS: Final = frozenset({"token", "sig"})
# Our callback URL's own parameters (set per campaign in the send's urlResponse).
ATTRIBUTION_PARAMS: Final = ("campaign", "tag")


@dataclasses.dataclass(frozen=True, slots=True)
class Attribution:
    """The ``campaign`` and ``tag`` query parameters of our callback URL (None: not given)."""

    campaign: str | None = None
    tag: str | None = None


NO_ATTRIBUTION: Final = Attribution()


def parse_attribution(query: Iterable[tuple[str, str]]) -> Attribution:
    """``campaign`` and ``tag`` of the callback URL's query string, validated.

    Each is optional; surrounding blanks are dropped and an empty value counts as
    absent. Otherwise: 1 to MAX_ATTRIBUTION printable ASCII characters, given
    once. InvalidCallback names each parameter that is not.
    """
    found: dict[str, list[str]] = {name: [] for name in ATTRIBUTION_PARAMS}
    for key, value in query:
        if key in found:
            found[key].append(value)
    problems: dict[str, str] = {}
    values: dict[str, str | None] = {}
    for name, given in found.items():
        if len(given) > 1:
            problems[name] = "parameter given more than once"
            continue
        value = given[0].strip() if given else ""
        if value and not is_attribution(value):
            problems[name] = f"at most {MAX_ATTRIBUTION} printable ASCII characters"
        values[name] = value or None
    if problems:
        raise InvalidCallback(problems)
    return Attribution(campaign=values["campaign"], tag=values["tag"])


_CONTROL: Final = re.compile("[\x00-\x1f\x7f]")


def _printable(value: str) -> str:
    """Identifiers are keys downstream (Kafka, SQL): no control characters (NUL...)."""
    # One regex scan: a generator over the characters was a tenth of the parsing's CPU.
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


# Every field has a bound: a callback is small whatever its encoding. The text
# is kept as sent (a GSM '@' may arrive as NUL from a careless gateway).
def _gsm_at(text: str) -> str:
    # GSM 03.38 codes '@' as 0x00; gateways that pass the septet through send a
    # NUL, which no store accepts in text.
    return text.replace("\x00", "@")


# The text's bound depends on the shape (part or single) and the settings: checked after.
Text = Annotated[str, AfterValidator(_gsm_at)]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID), AfterValidator(_printable)]
# As providers send numbers: digits, '+' first for E.164 (docs/callbacks-openapi.json
# states this pattern; a number of that form that cannot exist is a 422, below).
NUMBER_PATTERN: Final = r"^\+?[0-9]{1,31}$"
Phone = Annotated[str, Field(min_length=1, max_length=MAX_PHONE, pattern=NUMBER_PATTERN)]
# Well-formed fields that do not make a callback (an impossible number, concat fields
# that disagree): rules no OpenAPI document can state, answered 422, not 400.
UNPROCESSABLE: Final = 422
# The shape of message-timestamp (400 otherwise); a time that does not exist is a 422.
TIMESTAMP_PATTERN: Final = "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"


class _Callback(BaseModel):
    # Ids and numbers come as JSON numbers or strings; unknown fields are the
    # provider's business (signature fields, keyword...), not an error.
    # python-re: the pattern means what it means to the Python tools reading the document.
    model_config = ConfigDict(
        coerce_numbers_to_str=True, extra="ignore", frozen=True, regex_engine="python-re"
    )


M = TypeVar("M", bound=_Callback)


class LongNumberCallback(_Callback):
    msisdn: Phone
    to: Phone
    message_id: Id = Field(alias="messageId")
    text: Text = ""
    type: Literal["text", "unicode", "binary"] = "text"
    message_timestamp: str | None = Field(None, alias="message-timestamp", max_length=MAX_TIMESTAMP)
    concat: str | None = Field(None, max_length=8)
    concat_ref: int | None = Field(None, alias="concat-ref", ge=0, le=65535)
    concat_total: int | None = Field(None, alias="concat-total", ge=1, le=255)
    concat_part: int | None = Field(None, alias="concat-part", ge=1, le=255)

    @field_validator("concat", mode="before")
    @classmethod
    def _flag_as_text(cls, value: Any) -> Any:
        # JSON bodies may carry the flag as a boolean: true means the string "true".
        if isinstance(value, bool):
            return "true" if value else "false"
        return value

    @field_validator("message_timestamp")
    @classmethod
    def _timestamp_shape(cls, value: str | None) -> str | None:
        # The shape only (400); whether that time exists is checked after (422).
        if value is not None and not re.search(TIMESTAMP_PATTERN, value):
            raise ValueError("expected YYYY-MM-DD HH:MM:SS (UTC)")
        return value

    @field_validator("concat_ref", "concat_total", "concat_part", mode="before")
    @classmethod
    def _digits_only(cls, value: Any) -> Any:
        # As text: digits only (pydantic alone would take " 5" or "5.0"), as documented.
        if isinstance(value, str) and not (value.isascii() and value.isdigit()):
            raise ValueError("expected digits")
        return value


class ShortNumberCallback(_Callback):
    type: Literal["response", "stop"]
    phone_number: Phone
    text: Text = ""
    message_id: Annotated[str, Field(max_length=MAX_ID), AfterValidator(_printable)] = ""


class _LongFields(NamedTuple):
    """What :class:`LongNumberCallback` holds, as :func:`_fast_long` reads it."""

    msisdn: str
    to: str
    message_id: str
    text: str
    type: str
    message_timestamp: str | None
    concat: str | None
    concat_ref: int | None
    concat_total: int | None
    concat_part: int | None


_NUMBER: Final = re.compile(NUMBER_PATTERN[1:-1])  # fullmatch: no newline before the end
_TIMESTAMP: Final = re.compile(TIMESTAMP_PATTERN[1:-1])
_LONG_TYPES: Final = frozenset({"text", "unicode", "binary"})
# (alias, lowest, highest) of the concat numbers, as LongNumberCallback bounds them.
_CONCAT_NUMBERS: Final = (
    ("concat-ref", 0, 65535),
    ("concat-total", 1, 255),
    ("concat-part", 1, 255),
)


def _fast_long(fields: Mapping[str, Any]) -> _LongFields | None:
    """LongNumberCallback's values for a callback of plain, well-formed strings, else None.

    The common callback checked without pydantic (a third of the parsing's CPU,
    pydantic's own per-call cost): every rule here is the model's rule or a
    stricter one (ASCII identifiers, no trailing newline), and anything else
    returns None for the model to decide and word the problems.
    tests/unit/test_parsing_fast_path.py checks it against the model.
    """
    get = fields.get
    msisdn, to, message_id = get("msisdn"), get("to"), get("messageId")
    text, kind = get("text", ""), get("type", "text")
    if not (
        type(msisdn) is str
        and type(to) is str
        and type(message_id) is str
        and type(text) is str
        and type(kind) is str
        and kind in _LONG_TYPES
        and _NUMBER.fullmatch(msisdn)
        and _NUMBER.fullmatch(to)
        and 0 < len(message_id) <= MAX_ID
        and message_id.isascii()
        and not _CONTROL.search(message_id)
    ):
        return None
    timestamp = get("message-timestamp")
    if timestamp is not None and not (
        type(timestamp) is str
        and len(timestamp) <= MAX_TIMESTAMP
        and _TIMESTAMP.fullmatch(timestamp)
    ):
        return None
    concat = get("concat")
    if concat is not None and not (type(concat) is str and len(concat) <= 8 and concat.isascii()):
        return None
    numbers: list[int | None] = []
    for alias, lowest, highest in _CONCAT_NUMBERS:
        value = get(alias)
        if value is None:
            numbers.append(None)
            continue
        if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 10:
            value = int(value)
        if type(value) is not int or not lowest <= value <= highest:
            return None
        numbers.append(value)
    return _LongFields(msisdn, to, message_id, _gsm_at(text), kind, timestamp, concat, *numbers)


def parse_callback(
    params: Mapping[str, Any],
    received_at_ms: int,
    bounds: Bounds = _DEFAULT_BOUNDS,
    attribution: Attribution = NO_ATTRIBUTION,
) -> RawPart:
    """The callback as a RawPart; raises InvalidCallback naming every problem.

    ``params`` are the provider's fields; ``attribution`` is what our own URL
    carried (:func:`parse_attribution`), kept apart so that a provider field of
    the same name can never pass for it.
    """
    fields = (
        params
        if AUTH_PARAMS.isdisjoint(params)
        else {k: v for k, v in params.items() if k not in AUTH_PARAMS}
    )
    if "msisdn" in fields:
        long: LongNumberCallback | _LongFields | None = _fast_long(fields)
        if long is None:
            long = _validate(LongNumberCallback, fields)
        part = _long_number(long, received_at_ms, bounds)
    elif "phone_number" in fields or fields.get("type") in ("response", "stop"):
        part = _short_number(_validate(ShortNumberCallback, fields), received_at_ms)
    else:
        raise InvalidCallback(
            {
                "callback": "unknown shape: expected msisdn (long number) "
                "or phone_number (short number)"
            }
        )
    limit = bounds.text_limit(part)
    if len(part.text) > limit:
        shape = "a single message" if part.concat is None else "a part of a long SMS"
        raise InvalidCallback({"text": f"longer than {limit} characters, the limit for {shape}"})
    if attribution.campaign is None and attribution.tag is None:
        return part
    return dataclasses.replace(part, campaign=attribution.campaign, tag=attribution.tag)


def _validate(model: type[M], fields: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        problems = {
            ".".join(str(part) for part in error["loc"]) or "callback": error["msg"]
            for error in exc.errors(include_url=False)
        }
        raise InvalidCallback(problems) from None


def _long_number(
    cb: LongNumberCallback | _LongFields, received_at_ms: int, bounds: Bounds
) -> RawPart:
    if cb.concat_total is not None and cb.concat_total > bounds.max_parts:
        # A bound the document states (concat-total's maximum): 400, before any 422.
        raise InvalidCallback({"concat-total": f"more than {bounds.max_parts} parts"})
    problems: dict[str, str] = {}
    sender = _e164(cb.msisdn, "msisdn", problems)
    recipient = _e164(cb.to, "to", problems)
    concat = _concat(cb, bounds, problems)
    if cb.message_timestamp is not None:
        try:
            provider_time_ms(cb.message_timestamp)
        except ValueError as exc:
            problems["message-timestamp"] = str(exc)
    if problems:
        raise InvalidCallback(problems, UNPROCESSABLE)
    return RawPart(
        channel="long_number",
        sender=sender,
        recipient=recipient,
        text=cb.text,
        provider_message_id=cb.message_id,
        message_type=cb.type,
        received_at_ms=received_at_ms,
        concat=concat,
        provider_timestamp=cb.message_timestamp,
    )


def _concat(
    cb: LongNumberCallback | _LongFields, bounds: Bounds, problems: dict[str, str]
) -> Concat | None:
    ref, total, part = cb.concat_ref, cb.concat_total, cb.concat_part
    if ref is None and total is None and part is None:
        if cb.concat is not None and cb.concat.lower() in ("true", "1"):
            problems["concat"] = "concat is true but concat-ref/total/part are missing"
        return None
    if ref is None or total is None or part is None:
        problems["concat"] = "concat-ref, concat-total and concat-part go together"
        return None
    if part > total:
        problems["concat-part"] = f"part {part} is beyond concat-total {total}"
        return None
    return Concat(ref=ref, total=total, part=part)


def _short_number(cb: ShortNumberCallback, received_at_ms: int) -> RawPart:
    problems: dict[str, str] = {}
    sender = _e164(cb.phone_number, "phone_number", problems)
    if problems:
        raise InvalidCallback(problems, UNPROCESSABLE)
    return RawPart(
        channel="short_number",
        sender=sender,
        recipient=None,
        text=cb.text,
        provider_message_id=cb.message_id,
        message_type=cb.type,
        received_at_ms=received_at_ms,
    )


def _e164(raw: str, field: str, problems: dict[str, str]) -> str:
    """'33612345678', '+33612345678' or '0612345678' -> '+33612345678'."""
    try:
        return to_e164(raw)
    except NotAPhoneNumber as exc:
        problems[field] = str(exc)
        return ""
