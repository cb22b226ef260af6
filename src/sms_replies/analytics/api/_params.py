"""The API's parameters and request bodies, as pydantic models: what the code
accepts, and what the OpenAPI document states.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from sms_replies.analytics.campaigns import MAX_NAME
from sms_replies.analytics.params import (
    MAX_BUCKETS,
    MAX_TOP,
    TIME_PATTERN,
    Bucket,
    GroupBy,
    parse_zone,
)
from sms_replies.analytics.queries import CURSOR_PATTERN, MAX_PAGE

# The OpenAPI document is generated from these models, and clients are generated
# from it: every constraint the code applies is stated here (pattern, enum, bounds),
# so that a request the document allows is never refused with a 400 (checked by
# schemathesis, tests/integration/test_api_contract.py). Constraints between
# parameters cannot be stated in OpenAPI, so the code accepts every combination of
# query parameters: since after until is an empty range, cursor and offset go
# together. A campaign's end before its start would be a window without replies,
# which the store refuses: 422, the status of a well-formed request whose meaning
# is refused (schemathesis.toml counts it among the answers to valid data).

_TIME_HELP = (
    "A date (1900-2999) `YYYY-MM-DD`, a date-time `YYYY-MM-DDTHH:MM[:SS[.ffffff]]` with an "
    "optional offset (`Z`, `+02:00`; without one: wall-clock time in `tz`), or a relative "
    "time counted back from now: `30m`, `24h`, `7d`, `2w` (at most 7, 6, 5, 4 digits)."
)

# French numbers only: the provider rents French long numbers, and a pattern can state
# exactly which French numbers exist in length (any country would need phonenumbers'
# metadata in the document). Other countries: `sms-replies campaign add`.
FRENCH_NUMBER_PATTERN: Final = r"^(?:(?:\+33|0033|33|0)[1-9][0-9]{8}|0[1-9](?: [0-9]{2}){4})$"

# Printable (no control characters) and not blank: what Campaign accepts.
CAMPAIGN_NAME_PATTERN: Final = r"^[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s][^\x00-\x1f\x7f]*$"

MAX_OFFSET: Final = 2**31 - 1

MAX_DELIVERED: Final = 2**63 - 1  # BIGINT

MAX_FILTER_LENGTH: Final = 200


def _known_zone(name: str) -> str:
    parse_zone(name)  # InvalidQueryError is a ValueError: pydantic reports it
    return name


def _query_bool(value: Any) -> Any:
    # Only the document's own spelling (pydantic would also take yes/on/1...).
    if value in ("true", "false"):
        return value == "true"
    raise ValueError("true or false")


def _integral(value: Any) -> Any:
    # JSON Schema counts 5.0 as an integer; strict validation would not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


TimeText = Annotated[str, Field(pattern=TIME_PATTERN)]

# The ~600 names are listed once, in components (openapi_document puts the $ref).
_ZONE_MARK: Final = "x-time-zone"

ZoneName = Annotated[str, AfterValidator(_known_zone), WithJsonSchema({_ZONE_MARK: True})]

QueryBool = Annotated[bool, BeforeValidator(_query_bool)]

Delivered = Annotated[int, Field(ge=0, le=MAX_DELIVERED), BeforeValidator(_integral)]


class _Params(BaseModel):
    # python-re: the same regex semantics as the Python tools that read the document.
    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re")


class RangeParams(_Params):
    since: TimeText | None = Field(
        None,
        description=f"Start (inclusive); default until - 7d; at or after until: an empty "
        f"range. {_TIME_HELP}",
    )
    until: TimeText | None = Field(None, description=f"End (exclusive); default now. {_TIME_HELP}")
    tz: ZoneName | None = Field(
        None,
        description="IANA time zone for buckets, dates without offset and times shown; "
        "default: the server's (Europe/Paris).",
    )
    campaign: str | None = Field(
        None,
        pattern=r"\S",
        max_length=MAX_NAME,
        description="Only the replies of this declared campaign (404 if none has this name).",
    )


class SummaryParams(RangeParams):
    group_by: GroupBy | None = Field(None, description="Split the figures by this key.")
    top: int = Field(10, ge=1, le=MAX_TOP, description="Number of top keywords listed.")


class TimeseriesParams(RangeParams):
    bucket: Bucket = Field(
        "hour",
        description=f"Bucket size, cut in `tz`. A range of more than {MAX_BUCKETS} buckets "
        "is cut to its last ones (the answer's `start` says where they begin).",
    )
    group_by: GroupBy | None = Field(None, description="One series per value of this key.")


class KeywordsParams(RangeParams):
    limit: int = Field(10, ge=1, le=MAX_TOP, description="Number of keywords listed.")


class CampaignsParams(_Params):
    tz: ZoneName | None = Field(None, description="IANA time zone in which times are shown.")


class RepliesParams(_Params):
    since: TimeText | None = Field(None, description=f"received_at >= since. {_TIME_HELP}")
    until: TimeText | None = Field(None, description=f"received_at < until. {_TIME_HELP}")
    tz: ZoneName | None = Field(
        None, description="IANA time zone in which times are read and shown."
    )
    sender: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_FILTER_LENGTH,
        description="Sender number, in any format (E.164, international digits, national 06...), "
        "or its 'h:' pseudonym.",
    )
    recipient: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_FILTER_LENGTH,
        description="Recipient long number, in any format (E.164, international digits, "
        "national 07...).",
    )
    keyword: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_FILTER_LENGTH,
        description="Keyword (case-insensitive).",
    )
    is_stop: QueryBool | None = Field(
        None, description="Only opt-outs (true) or only others (false)."
    )
    complete: QueryBool | None = Field(
        None, description="Only complete (true) or incomplete replies."
    )
    campaign: str | None = Field(
        None,
        pattern=r"\S",
        max_length=MAX_NAME,
        description="Only the replies of this campaign: its callback URL named it, or it is "
        "declared and the reply is in its window (the campaign figures' rule; 404 if unknown).",
    )
    limit: int = Field(100, ge=1, le=MAX_PAGE, description="Rows per page.")
    offset: int | None = Field(
        None,
        ge=0,
        le=MAX_OFFSET,
        description="Rows to skip: from the newest, or after the cursor's row when both are given.",
    )
    cursor: str | None = Field(
        None,
        pattern=CURSOR_PATTERN,
        description="`next_cursor` of the previous page: the next page starts after that row.",
    )


class OptoutsParams(_Params):
    since: TimeText | None = Field(
        None, description=f"Only decisions taken at or after this time. {_TIME_HELP}"
    )
    tz: ZoneName | None = Field(None, description="IANA time zone in which times are shown.")
    all: QueryBool | None = Field(
        None, description="true: also the senders opted back in (START); default false."
    )


class _CampaignBody(_Params):
    # strict: a JSON body's types are the document's (no "1" for 1, no 1 for true).
    model_config = ConfigDict(strict=True)

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME,
        pattern=CAMPAIGN_NAME_PATTERN,
        description="Unique campaign name: printable characters, not blank.",
    )
    start: TimeText = Field(description=f"Start of the reply window (inclusive). {_TIME_HELP}")
    end: TimeText = Field(
        description=f"End of the reply window (exclusive): after start (else 422). {_TIME_HELP}"
    )
    delivered: Delivered | None = Field(None, description="Messages delivered, for the rates.")
    tz: ZoneName | None = Field(None, description="Zone of start/end when they carry no offset.")
    replace: bool = Field(False, description="Replace a campaign of the same name.")


class LongNumberCampaignBody(_CampaignBody):
    recipient: str = Field(
        pattern=FRENCH_NUMBER_PATTERN,
        description="French long number the campaign was sent from (replies go to it): "
        "+33612345678, 33612345678, 0033612345678, 0612345678 or 06 12 34 56 78.",
    )
    short_number: Literal[False] = Field(False, description="false: a long-number campaign.")


class ShortNumberCampaignBody(_CampaignBody):
    short_number: Literal[True] = Field(description="true: a campaign on the short number.")


CampaignBody = LongNumberCampaignBody | ShortNumberCampaignBody
