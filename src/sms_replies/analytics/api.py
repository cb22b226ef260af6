"""Analytics HTTP API and dashboard (aiohttp): ``create_api_app(store)``.

Routes (every one is described by ``GET /api/openapi.json``):

- ``GET /api/summary``, ``/api/timeseries``, ``/api/keywords``: statistics;
- ``GET /api/campaigns`` (with their figures), ``POST /api/campaigns`` (declare);
- ``GET /api/replies``: reply rows, filtered and paged;
- ``GET /api/optouts``: the opt-out list (the object ``sms-replies optouts list
  --format json`` prints);
- ``GET /dashboard/``: the dashboard page, its files under ``/dashboard/static/``.

Query parameters are validated by pydantic models (unknown or repeated ones
are refused); an invalid one gets ``400 {"error": "invalid_parameter",
"parameter": ..., "message": ...}``. Errors never carry stack traces. Each
request reads the store (DuckDB, PostgreSQL or ClickHouse: a
:class:`~sms_replies.stores.url.StoreURL`) in a thread through
:func:`~sms_replies.stores.readers.open_store`, closed right after; for DuckDB,
through the DuckDB sink's loopback endpoint while the sink owns the store
(readers can then never hold its writes back), else the file itself, read-only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from sms_replies.analytics.campaigns import (
    MAX_NAME,
    Campaign,
    CampaignExistsError,
    CampaignStats,
    campaign_stats,
    declare_campaign,
)
from sms_replies.analytics.guard import (
    ACCESS,
    ApiAccess,
    add_protective_headers,
    guard_middleware,
)
from sms_replies.analytics.optouts import NoOptOutListError, OptOutList, list_optouts
from sms_replies.analytics.params import (
    DEFAULT_TZ,
    MAX_BUCKETS,
    MAX_TOP,
    TIME_PATTERN,
    Bucket,
    GroupBy,
    InvalidQueryError,
    StatsQuery,
    UnknownCampaignError,
    known_zones,
    last_buckets_start,
    parse_time,
    parse_zone,
    time_range,
)
from sms_replies.analytics.queries import (
    CURSOR_PATTERN,
    MAX_PAGE,
    KeywordCount,
    ReplyFilter,
    ReplyPage,
    Summary,
    Timeseries,
    list_replies,
    summary,
    timeseries,
    to_plain,
    top_keywords,
)
from sms_replies.errors import SmsRepliesError
from sms_replies.http_server import hide_server_version
from sms_replies.privacy import e164, is_pseudonym, pseudonymize
from sms_replies.schema import TABLE
from sms_replies.stores.errors import StoreBusyError, StoreError
from sms_replies.stores.readers import DEFAULT_TIMEOUT, Reader, open_store
from sms_replies.stores.url import StoreURL

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

STATIC_DIR: Final = Path(__file__).parent / "static"
# The page loads only its own files (the chart library is vendored) and calls only this API.
DASHBOARD_CSP: Final = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class ApiConfig:
    store: StoreURL
    default_tz: str
    store_timeout: float
    pseudonymize_key: bytes | None = None  # senders are stored pseudonymised under it


CONFIG: Final = web.AppKey("sms_replies_analytics_config", ApiConfig)

# -- parameters -----------------------------------------------------------------------
#
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


# -- responses ---------------------------------------------------------------------


class ApiError(SmsRepliesError):
    """An API request answered with ``status`` and a JSON error body."""

    def __init__(
        self, status: int, error: str, message: str, *, parameter: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.parameter = parameter


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(to_plain(value), status=status, dumps=_dumps)


def _error_body(
    error: str,
    message: str,
    parameter: str | None = None,
    errors: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "message": message}
    if parameter is not None:
        body["parameter"] = parameter
    if errors:
        body["errors"] = errors
    return body


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        errors = exc.errors if isinstance(exc, _InvalidParametersError) else None
        return _json(_error_body(exc.error, exc.message, exc.parameter, errors), exc.status)
    except InvalidQueryError as exc:
        return _json(_error_body("invalid_parameter", exc.message, exc.param), 400)
    except UnknownCampaignError as exc:
        return _json(_error_body("unknown_campaign", str(exc), "campaign"), 404)
    except CampaignExistsError as exc:
        return _json(_error_body("campaign_exists", str(exc), "name"), 409)
    except NoOptOutListError as exc:  # never an empty list the sender would trust
        error = "optout_list_missing" if exc.reason == "not_kept" else "store_missing"
        return _json(_error_body(error, str(exc)), 503)
    except StoreBusyError:
        response = _json(
            _error_body("store_busy", "the store is busy being written; retry shortly"), 503
        )
        response.headers["Retry-After"] = "1"
        return response
    except StoreError as exc:
        if exc.retriable:  # the server is down or restarting
            log.warning("analytics store unavailable: %s", exc)
            response = _json(
                _error_body("store_unavailable", "the store is unavailable; retry"), 503
            )
            response.headers["Retry-After"] = "5"
            return response
        log.exception("analytics store error")
        return _json(_error_body("store_error", "the store could not be read"), 500)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _json(_error_body(exc.reason.lower().replace(" ", "_"), exc.reason), exc.status)
        if "Allow" in exc.headers:  # 405: the methods the path has (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("analytics API failure on %s", request.path)
        return _json(_error_body("internal_error", "internal error"), 500)


def _params(request: web.Request, model: type[M]) -> M:
    raw: dict[str, str] = {}
    for name in request.query:
        values = request.query.getall(name)
        if len(values) > 1:
            raise ApiError(400, "invalid_parameter", "given more than once", parameter=name)
        raw[name] = values[0]
    return _validate(model, raw)


def _validate(model: type[M], raw: Any) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {
                "parameter": ".".join(str(p) for p in err["loc"]) or "body",
                "message": "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"],
            }
            for err in exc.errors(include_url=False, include_input=False)
        ]
        first = errors[0]
        raise _InvalidParametersError(first["parameter"], first["message"], errors) from None


class _InvalidParametersError(ApiError):
    def __init__(self, parameter: str, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(400, "invalid_parameter", message, parameter=parameter)
        self.errors = errors


async def _read(request: web.Request, query: Callable[[Reader], T], *, replies: bool = False) -> T:
    """``query`` on a reader of the configured store, in a thread.

    ``replies``: the answer is figures or rows of replies, so a store that does not
    exist or holds no replies table is a 503 ``store_missing`` (as the CLI's warning
    and exit 1), never zeros an analyst would trust.
    """
    config = request.app[CONFIG]

    def run() -> T:
        with open_store(config.store, timeout=config.store_timeout) as reader:
            if replies:
                _require_replies(reader)
            return query(reader)

    return await asyncio.to_thread(run)


def _require_replies(reader: Reader) -> None:
    if not reader.exists:
        what = "does not exist"
    elif not reader.columns(TABLE):
        what = "holds no replies table"
    else:
        return
    raise ApiError(
        503,
        "store_missing",
        f"the store {what}: no reply stored there yet, or another store was meant "
        "(SMS_REPLIES_ANALYTICS_STORE, --store)",
    )


def _tz(request: web.Request, tz: str | None) -> str:
    name = tz or request.app[CONFIG].default_tz
    parse_zone(name)
    return name


def _stats_query(
    request: web.Request,
    p: RangeParams,
    *,
    group_by: GroupBy | None = None,
    bucket: Bucket | None = None,
    top: int = 10,
) -> StatsQuery:
    tz = _tz(request, p.tz)
    start, end = time_range(p.since, p.until, tz=tz)
    start = min(start, end)  # since at or after until: an empty range
    if bucket is not None:
        start = last_buckets_start(start, end, bucket)
    return StatsQuery(
        start=start,
        end=end,
        tz=tz,
        group_by=group_by,
        bucket=bucket,
        campaign=p.campaign,
        top=top,
    )


# -- handlers -----------------------------------------------------------------------


async def get_summary(request: web.Request) -> web.Response:
    p = _params(request, SummaryParams)
    q = _stats_query(request, p, group_by=p.group_by, top=p.top)
    return _json(await _read(request, lambda con: summary(con, q), replies=True))


async def get_timeseries(request: web.Request) -> web.Response:
    p = _params(request, TimeseriesParams)
    q = _stats_query(request, p, group_by=p.group_by, bucket=p.bucket)
    return _json(await _read(request, lambda con: timeseries(con, q), replies=True))


async def get_keywords(request: web.Request) -> web.Response:
    p = _params(request, KeywordsParams)
    q = _stats_query(request, p, top=p.limit)
    keywords = await _read(request, lambda con: top_keywords(con, q), replies=True)
    return _json(
        {
            "start": q.start.astimezone(q.zone),
            "end": q.end.astimezone(q.zone),
            "tz": q.tz,
            "keywords": keywords,
        }
    )


async def get_campaigns(request: web.Request) -> web.Response:
    p = _params(request, CampaignsParams)
    tz = parse_zone(_tz(request, p.tz))
    campaigns = await _read(request, lambda con: campaign_stats(con, tz=tz))
    return _json({"campaigns": campaigns})


async def post_campaign(request: web.Request) -> web.Response:
    _params(request, _Params)
    try:
        raw = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_body", "the body is not JSON", parameter="body") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object", parameter="body")
    # The document's oneOf, chosen by the one field that tells the two shapes apart.
    body: CampaignBody = (
        _validate(ShortNumberCampaignBody, raw)
        if raw.get("short_number") is True
        else _validate(LongNumberCampaignBody, raw)
    )
    tz = _tz(request, body.tz)
    now = datetime.now(UTC)
    start = parse_time(body.start, tz=tz, now=now, param="start")
    end = parse_time(body.end, tz=tz, now=now, param="end")
    if end <= start:  # the one rule a JSON schema cannot state: not a 400 (see above)
        raise ApiError(422, "empty_window", "end must be after start", parameter="end")
    campaign = Campaign.create(
        body.name,
        start=start,
        end=end,
        recipient=body.recipient if isinstance(body, LongNumberCampaignBody) else None,
        short_number=body.short_number,
        delivered=body.delivered,
    )
    config = request.app[CONFIG]
    stored = await asyncio.to_thread(
        declare_campaign,
        config.store,
        campaign,
        replace=body.replace,
        timeout=config.store_timeout,
    )
    zone = parse_zone(tz)
    shown = Campaign(
        name=stored.name,
        channel=stored.channel,
        recipient=stored.recipient,
        start=stored.start.astimezone(zone),
        end=stored.end.astimezone(zone),
        delivered=stored.delivered,
        created_at=stored.created_at.astimezone(zone) if stored.created_at else None,
    )
    return _json({"campaign": shown}, status=201)


def _number(value: str | None) -> str | None:
    """A number filter as stored (E.164); what is no number stays as given (matches nothing)."""
    if value is None:
        return None
    text = value.strip()  # a '+' sent unencoded in a query string arrives as a space
    return e164(text) or (text if text.startswith("+") else "+" + text)


def _sender(value: str | None, key: bytes | None) -> str | None:
    """The sender as stored: E.164, or its pseudonym when the store is pseudonymised."""
    if value is None or is_pseudonym(value.strip()):
        return None if value is None else value.strip()
    number = _number(value)
    return pseudonymize(number, key) if key is not None and number else number


async def get_replies(request: web.Request) -> web.Response:
    p = _params(request, RepliesParams)
    tz = _tz(request, p.tz)
    now = datetime.now(UTC)
    start = parse_time(p.since, tz=tz, now=now, param="since") if p.since else None
    end = parse_time(p.until, tz=tz, now=now, param="until") if p.until else None
    if start is not None and end is not None:
        start = min(start, end)  # since at or after until: an empty range
    f = ReplyFilter(
        start=start,
        end=end,
        tz=tz,
        sender=_sender(p.sender, request.app[CONFIG].pseudonymize_key),
        recipient=_number(p.recipient),
        keyword=p.keyword.strip().upper() if p.keyword else None,
        is_stop=p.is_stop,
        complete=p.complete,
        campaign=p.campaign,
        limit=p.limit,
        offset=p.offset,
        cursor=p.cursor,
    )
    return _json(await _read(request, lambda con: list_replies(con, f), replies=True))


async def get_optouts(request: web.Request) -> web.Response:
    p = _params(request, OptoutsParams)
    tz = _tz(request, p.tz)
    since = parse_time(p.since, tz=tz, param="since") if p.since else None
    include = bool(p.all)
    return _json(
        await _read(
            request,
            lambda reader: list_optouts(reader, tz=tz, since=since, include_opted_in=include),
        )
    )


async def get_openapi(request: web.Request) -> web.Response:
    return _json(openapi_document(request.app[CONFIG].default_tz))


async def get_dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC_DIR / "index.html",
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": DASHBOARD_CSP},
    )


STATIC_FILES: Final = web.AppKey("sms_replies_static_files", frozenset[str])


async def get_static(request: web.Request) -> web.FileResponse:
    # Only the files shipped (listed at start): aiohttp's static route would answer a
    # missing one with an empty 404 of its own, outside the JSON errors.
    name = request.match_info["filename"]
    if name not in request.app[STATIC_FILES]:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC_DIR / name)


def _static_files() -> frozenset[str]:
    return frozenset(
        p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()
    )


async def redirect_dashboard(request: web.Request) -> web.Response:
    location = request.rel_url.with_path(request.path + "/")
    raise web.HTTPFound(location)


# -- OpenAPI ------------------------------------------------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """One route: the router registers ``handler`` and the OpenAPI document describes it."""

    method: Literal["GET", "POST"]
    path: str
    handler: Handler
    summary: str
    params: type[BaseModel] | None
    response: Any  # a type for TypeAdapter, or None for non-JSON
    status: int = 200
    body: Any = None  # a type for TypeAdapter (a model or a union of models)
    content_type: str = "application/json"
    router_path: str | None = None  # when aiohttp needs another pattern than the document
    description: str | None = None  # the operation's description in the document
    store_missing: str | None = None  # the 503 when the store cannot answer (not just busy)


#: The 503 of the endpoints answering figures or rows of replies (:func:`_require_replies`).
NO_REPLIES_503: Final = (
    "Store busy (`store_busy`, `store_unavailable`: retry), or `store_missing`: the store "
    "does not exist or holds no replies table (nothing stored yet, or another store was meant)"
)


@dataclass(frozen=True, slots=True)
class KeywordsResponse:
    start: datetime
    end: datetime
    tz: str
    keywords: list[KeywordCount]


@dataclass(frozen=True, slots=True)
class CampaignsResponse:
    campaigns: list[CampaignStats]


@dataclass(frozen=True, slots=True)
class CampaignResponse:
    campaign: Campaign


ROUTES: Final[tuple[RouteDoc, ...]] = (
    RouteDoc(
        "GET",
        "/api/summary",
        get_summary,
        "Totals, groups and top keywords",
        SummaryParams,
        Summary,
        store_missing=NO_REPLIES_503,
    ),
    RouteDoc(
        "GET",
        "/api/timeseries",
        get_timeseries,
        "Counts per hour or day",
        TimeseriesParams,
        Timeseries,
        store_missing=NO_REPLIES_503,
    ),
    RouteDoc(
        "GET",
        "/api/keywords",
        get_keywords,
        "Most frequent keywords",
        KeywordsParams,
        KeywordsResponse,
        store_missing=NO_REPLIES_503,
    ),
    RouteDoc(
        "GET",
        "/api/campaigns",
        get_campaigns,
        "Declared campaigns and their figures",
        CampaignsParams,
        CampaignsResponse,
    ),
    RouteDoc(
        "POST",
        "/api/campaigns",
        post_campaign,
        "Declare a campaign",
        None,
        CampaignResponse,
        status=201,
        body=CampaignBody,
    ),
    RouteDoc(
        "GET",
        "/api/replies",
        get_replies,
        "Reply rows, newest first",
        RepliesParams,
        ReplyPage,
        store_missing=NO_REPLIES_503,
    ),
    RouteDoc(
        "GET",
        "/api/optouts",
        get_optouts,
        "The opt-out list (senders opted out, most recent first)",
        OptoutsParams,
        OptOutList,
        description="The object `sms-replies optouts list --format json` prints. A store "
        "that cannot tell who opted out is never an empty list: 503 with error "
        "`store_missing` when the store does not exist or holds no replies table (another "
        "store was meant), `optout_list_missing` when its replies were written before the "
        "opt-out list existed (no `optouts` table).",
        store_missing="Store busy (`store_busy`, `store_unavailable`: retry), or it cannot "
        "tell who opted out: `store_missing` (no such store, no replies table) or "
        "`optout_list_missing` (no `optouts` table yet)",
    ),
    RouteDoc("GET", "/api/openapi.json", get_openapi, "This document", None, dict[str, Any]),
    RouteDoc(
        "GET",
        "/dashboard",
        redirect_dashboard,
        "Redirect to /dashboard/",
        None,
        None,
        status=302,
        content_type="text/html",
    ),
    RouteDoc(
        "GET",
        "/dashboard/",
        get_dashboard,
        "The dashboard page",
        None,
        None,
        content_type="text/html",
    ),
    RouteDoc(
        "GET",
        "/dashboard/static/{filename}",
        get_static,
        "Dashboard files (JS, CSS, chart library)",
        None,
        None,
        content_type="application/octet-stream",
        router_path="/dashboard/static/{filename:.+}",
    ),
)

_ERROR_SCHEMA: Final = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "parameter": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"parameter": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def _schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    schema = TypeAdapter(tp).json_schema(ref_template="#/components/schemas/{model}")
    defs.update(schema.pop("$defs", {}))
    if "anyOf" in schema:  # the body's shapes exclude each other
        schema["oneOf"] = schema.pop("anyOf")
    return schema


def _query_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: absent is how a query says None, never ``null``."""
    branches = prop.get("anyOf")
    if branches:
        kept = [b for b in branches if b.get("type") != "null"]
        if len(kept) == 1:
            prop = {**{k: v for k, v in prop.items() if k != "anyOf"}, **kept[0]}
    if prop.get("default", 0) is None:
        del prop["default"]
    return prop


def openapi_document(default_tz: str = DEFAULT_TZ) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every route of :func:`create_api_app`."""
    defs: dict[str, Any] = {
        "Error": _ERROR_SCHEMA,
        "TimeZone": {
            "type": "string",
            "enum": sorted(known_zones()),
            "description": "An IANA time zone name known to the server.",
        },
    }
    error_ref = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{route.path.strip('/').replace('/', '_')}",
        }
        if route.description is not None:
            op["description"] = route.description
        parameters = []
        if "{filename}" in route.path:
            parameters.append(
                {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}
            )
        if route.params is not None:
            model_schema = route.params.model_json_schema()
            required = set(model_schema.get("required", []))
            for name, prop in model_schema["properties"].items():
                prop = dict(prop)
                description = prop.pop("description", "")
                prop.pop("title", None)
                if name == "tz":
                    description = description.replace("Europe/Paris", default_tz)
                parameters.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in required,
                        "description": description,
                        "schema": _query_schema(prop),
                    }
                )
        if parameters:
            op["parameters"] = parameters
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(route.body, defs)}},
            }
        content: dict[str, Any] = {}
        if route.response is not None:
            content = {route.content_type: {"schema": _schema(route.response, defs)}}
        elif route.status == 200:
            content = {route.content_type: {"schema": {"type": "string"}}}
        responses: dict[str, Any] = {
            str(route.status): {"description": "OK" if route.status < 300 else "Redirect"}
        }
        if content:
            responses[str(route.status)]["content"] = content
        json_error = {"application/json": {"schema": error_ref}}
        if "{filename}" in route.path:
            responses["404"] = {"description": "No such file", "content": json_error}
        if route.path.startswith("/api/"):
            # analytics/guard.py: the token when one is set, Host and Origin always.
            op["security"] = [{"bearer": []}]
            responses["401"] = {"description": "Token missing or wrong", "content": json_error}
            responses["403"] = {
                "description": "Host or origin refused; a write without a configured token",
                "content": json_error,
            }
        if route.method == "POST":
            responses["415"] = {"description": "Body not application/json", "content": json_error}
        if route.path.startswith("/api/") and route.path != "/api/openapi.json":
            responses["400"] = {"description": "An invalid parameter", "content": json_error}
            responses["503"] = {
                "description": route.store_missing or "Store busy: retry",
                "content": json_error,
            }
            if route.method == "POST":
                responses["409"] = {"description": "Campaign exists", "content": json_error}
                responses["422"] = {
                    "description": "end is not after start (error `empty_window`)",
                    "content": json_error,
                }
            else:
                responses["404"] = {"description": "Unknown campaign", "content": json_error}
        op["responses"] = responses
        paths.setdefault(route.path, {})[route.method.lower()] = op
    document: dict[str, Any] = _zone_refs(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "sms-replies analytics API",
                "version": "1",
                "description": "Statistics over the stored replies (DuckDB, PostgreSQL or "
                "ClickHouse; docs/analytics.md).",
            },
            "paths": paths,
            "components": {
                "schemas": defs,
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "SMS_REPLIES_API_TOKEN. Needed by every request when "
                        "set (always beyond loopback); without it, writes are refused.",
                    }
                },
            },
        }
    )
    return document


def _zone_refs(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get(_ZONE_MARK):
            return {"$ref": "#/components/schemas/TimeZone"}
        return {k: _zone_refs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_zone_refs(v) for v in node]
    return node


# -- application --------------------------------------------------------------------


def create_api_app(
    store: StoreURL | Path,
    *,
    default_tz: str = DEFAULT_TZ,
    store_timeout: float = DEFAULT_TIMEOUT,
    access: ApiAccess | None = None,
    pseudonymize_key: bytes | None = None,
) -> web.Application:
    """The analytics API and dashboard reading ``store`` (a DuckDB file may not exist yet).

    ``access``: token and host names (analytics/guard.py); by default no token,
    so reads are open (serve it on loopback only) and writes are refused.
    """
    parse_zone(default_tz, param="default_tz")
    hide_server_version()
    app = web.Application(middlewares=[guard_middleware, _errors])
    app[ACCESS] = access or ApiAccess()
    app.on_response_prepare.append(add_protective_headers)
    app[CONFIG] = ApiConfig(
        store=store if isinstance(store, StoreURL) else StoreURL("duckdb", path=store),
        default_tz=default_tz,
        store_timeout=store_timeout,
        pseudonymize_key=pseudonymize_key,
    )
    for route in ROUTES:
        app.router.add_route(route.method, route.router_path or route.path, route.handler)
    app[STATIC_FILES] = _static_files()
    return app
