"""Analytics HTTP API and dashboard (aiohttp): ``create_api_app(duckdb_path)``.

Routes (every one is described by ``GET /api/openapi.json``):

- ``GET /api/summary``, ``/api/timeseries``, ``/api/keywords``: statistics;
- ``GET /api/campaigns`` (with their figures), ``POST /api/campaigns`` (declare);
- ``GET /api/replies``: reply rows, filtered and paged;
- ``GET /dashboard/``: the dashboard page, its files under ``/dashboard/static/``.

Query parameters are validated by pydantic models (unknown or repeated ones
are refused); an invalid one gets ``400 {"error": "invalid_parameter",
"parameter": ..., "message": ...}``. Errors never carry stack traces. The store
is opened read-only for each request, in a thread, and closed right after,
so that the DuckDB sink can keep writing between requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import duckdb
import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sms_replies.analytics.campaigns import (
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
from sms_replies.analytics.params import (
    DEFAULT_TZ,
    MAX_TOP,
    Bucket,
    GroupBy,
    InvalidQueryError,
    StatsQuery,
    UnknownCampaignError,
    parse_time,
    parse_zone,
    time_range,
)
from sms_replies.analytics.queries import (
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
from sms_replies.analytics.store import DEFAULT_TIMEOUT, StoreBusyError, StoreError, open_reader
from sms_replies.http_server import hide_server_version
from sms_replies.privacy import e164, is_pseudonym, pseudonymize

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
    duckdb_path: Path
    default_tz: str
    store_timeout: float
    pseudonymize_key: bytes | None = None  # senders are stored pseudonymised under it


CONFIG: Final = web.AppKey("sms_replies_analytics_config", ApiConfig)

# -- parameters -----------------------------------------------------------------------

_TIME_HELP = (
    "ISO 8601 date or date-time (without an offset: wall-clock time in `tz`), "
    "or a relative time counted back from now: 30m, 24h, 7d, 2w."
)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RangeParams(_Params):
    since: str | None = Field(
        None, description=f"Start (inclusive); default until - 7d. {_TIME_HELP}"
    )
    until: str | None = Field(None, description=f"End (exclusive); default now. {_TIME_HELP}")
    tz: str | None = Field(
        None,
        description="IANA time zone for buckets, dates without offset and times shown; "
        "default: the server's (Europe/Paris).",
    )
    campaign: str | None = Field(
        None, min_length=1, description="Only the replies of this declared campaign."
    )


class SummaryParams(RangeParams):
    group_by: GroupBy | None = Field(None, description="Split the figures by this key.")
    top: int = Field(10, ge=1, le=MAX_TOP, description="Number of top keywords listed.")


class TimeseriesParams(RangeParams):
    bucket: Bucket = Field("hour", description="Bucket size, cut in `tz`.")
    group_by: GroupBy | None = Field(None, description="One series per value of this key.")


class KeywordsParams(RangeParams):
    limit: int = Field(10, ge=1, le=MAX_TOP, description="Number of keywords listed.")


class CampaignsParams(_Params):
    tz: str | None = Field(None, description="IANA time zone in which times are shown.")


class RepliesParams(_Params):
    since: str | None = Field(None, description=f"received_at >= since. {_TIME_HELP}")
    until: str | None = Field(None, description=f"received_at < until. {_TIME_HELP}")
    tz: str | None = Field(None, description="IANA time zone in which times are read and shown.")
    sender: str | None = Field(
        None,
        min_length=1,
        description="Sender number, in any format (E.164, international digits, national 06...), "
        "or its 'h:' pseudonym.",
    )
    recipient: str | None = Field(
        None, min_length=1, description="Recipient long number, E.164 (+ may be omitted)."
    )
    keyword: str | None = Field(None, min_length=1, description="Keyword (case-insensitive).")
    is_stop: bool | None = Field(None, description="Only opt-outs (true) or only others (false).")
    complete: bool | None = Field(None, description="Only complete (true) or incomplete replies.")
    limit: int = Field(100, ge=1, le=MAX_PAGE, description="Rows per page.")
    offset: int | None = Field(None, ge=0, description="Rows to skip (instead of cursor).")
    cursor: str | None = Field(
        None, min_length=1, description="`next_cursor` of the previous page (instead of offset)."
    )


class CampaignBody(_Params):
    name: str = Field(min_length=1, max_length=200, description="Unique campaign name.")
    recipient: str | None = Field(
        None, description="Long number the campaign was sent from (replies go to it)."
    )
    short_number: bool = Field(False, description="A campaign on the short number (no recipient).")
    start: str = Field(description=f"Start of the reply window (inclusive). {_TIME_HELP}")
    end: str = Field(description=f"End of the reply window (exclusive). {_TIME_HELP}")
    delivered: int | None = Field(None, ge=0, description="Messages delivered, for the rates.")
    tz: str | None = Field(None, description="Zone of start/end when they carry no offset.")
    replace: bool = Field(False, description="Replace a campaign of the same name.")


# -- responses ---------------------------------------------------------------------


class ApiError(Exception):
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
    except StoreBusyError:
        response = _json(
            _error_body("store_busy", "the store is busy being written; retry shortly"), 503
        )
        response.headers["Retry-After"] = "1"
        return response
    except StoreError:
        log.exception("analytics store error")
        return _json(_error_body("store_error", "the store could not be read"), 500)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return _json(_error_body(exc.reason.lower().replace(" ", "_"), exc.reason), exc.status)
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


async def _read(request: web.Request, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    config = request.app[CONFIG]

    def run() -> T:
        with open_reader(config.duckdb_path, timeout=config.store_timeout) as con:
            return query(con)

    return await asyncio.to_thread(run)


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
    return _json(await _read(request, lambda con: summary(con, q)))


async def get_timeseries(request: web.Request) -> web.Response:
    p = _params(request, TimeseriesParams)
    q = _stats_query(request, p, group_by=p.group_by, bucket=p.bucket)
    return _json(await _read(request, lambda con: timeseries(con, q)))


async def get_keywords(request: web.Request) -> web.Response:
    p = _params(request, KeywordsParams)
    q = _stats_query(request, p, top=p.limit)
    keywords = await _read(request, lambda con: top_keywords(con, q))
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
    body = _validate(CampaignBody, raw)
    tz = _tz(request, body.tz)
    campaign = Campaign.create(
        body.name,
        start=parse_time(body.start, tz=tz, param="start"),
        end=parse_time(body.end, tz=tz, param="end"),
        recipient=body.recipient,
        short_number=body.short_number,
        delivered=body.delivered,
    )
    config = request.app[CONFIG]
    stored = await asyncio.to_thread(
        declare_campaign,
        config.duckdb_path,
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
    if value is None:
        return None
    text = value.strip()  # a '+' sent unencoded in a query string arrives as a space
    return text if text.startswith("+") else "+" + text


def _sender(value: str | None, key: bytes | None) -> str | None:
    """The sender as stored: E.164, or its pseudonym when the store is pseudonymised."""
    if value is None or is_pseudonym(value.strip()):
        return None if value is None else value.strip()
    number = e164(value) or _number(value)
    return pseudonymize(number, key) if key is not None and number else number


async def get_replies(request: web.Request) -> web.Response:
    p = _params(request, RepliesParams)
    tz = _tz(request, p.tz)
    f = ReplyFilter(
        start=parse_time(p.since, tz=tz, param="since") if p.since else None,
        end=parse_time(p.until, tz=tz, param="until") if p.until else None,
        tz=tz,
        sender=_sender(p.sender, request.app[CONFIG].pseudonymize_key),
        recipient=_number(p.recipient),
        keyword=p.keyword.strip().upper() if p.keyword else None,
        is_stop=p.is_stop,
        complete=p.complete,
        limit=p.limit,
        offset=p.offset,
        cursor=p.cursor,
    )
    return _json(await _read(request, lambda con: list_replies(con, f)))


async def get_openapi(request: web.Request) -> web.Response:
    return _json(openapi_document(request.app[CONFIG].default_tz))


async def get_dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC_DIR / "index.html",
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": DASHBOARD_CSP},
    )


async def redirect_dashboard(request: web.Request) -> web.Response:
    location = request.rel_url.with_path(request.path + "/")
    raise web.HTTPFound(location)


# -- OpenAPI ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteDoc:
    method: Literal["GET", "POST"]
    path: str
    summary: str
    params: type[BaseModel] | None
    response: Any  # a type for TypeAdapter, or None for non-JSON
    status: int = 200
    body: type[BaseModel] | None = None
    content_type: str = "application/json"


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
    RouteDoc("GET", "/api/summary", "Totals, groups and top keywords", SummaryParams, Summary),
    RouteDoc("GET", "/api/timeseries", "Counts per hour or day", TimeseriesParams, Timeseries),
    RouteDoc("GET", "/api/keywords", "Most frequent keywords", KeywordsParams, KeywordsResponse),
    RouteDoc(
        "GET",
        "/api/campaigns",
        "Declared campaigns and their figures",
        CampaignsParams,
        CampaignsResponse,
    ),
    RouteDoc(
        "POST",
        "/api/campaigns",
        "Declare a campaign",
        None,
        CampaignResponse,
        status=201,
        body=CampaignBody,
    ),
    RouteDoc("GET", "/api/replies", "Reply rows, newest first", RepliesParams, ReplyPage),
    RouteDoc("GET", "/api/openapi.json", "This document", None, dict[str, Any]),
    RouteDoc(
        "GET",
        "/dashboard",
        "Redirect to /dashboard/",
        None,
        None,
        status=302,
        content_type="text/html",
    ),
    RouteDoc("GET", "/dashboard/", "The dashboard page", None, None, content_type="text/html"),
    RouteDoc(
        "GET",
        "/dashboard/static/{filename}",
        "Dashboard files (JS, CSS, chart library)",
        None,
        None,
        content_type="application/octet-stream",
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
    return schema


def openapi_document(default_tz: str = DEFAULT_TZ) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every route of :func:`create_api_app`."""
    defs: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    error_ref = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{route.path.strip('/').replace('/', '_')}",
        }
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
                        "schema": prop,
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
            responses["503"] = {"description": "Store busy: retry", "content": json_error}
            if route.method == "POST":
                responses["409"] = {"description": "Campaign exists", "content": json_error}
            else:
                responses["404"] = {"description": "Unknown campaign", "content": json_error}
        op["responses"] = responses
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sms-replies analytics API",
            "version": "1",
            "description": "Statistics over the replies stored in DuckDB; see docs/analytics.md.",
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


# -- application --------------------------------------------------------------------

_HANDLERS: Final[dict[tuple[str, str], Callable[[web.Request], Awaitable[web.StreamResponse]]]] = {
    ("GET", "/api/summary"): get_summary,
    ("GET", "/api/timeseries"): get_timeseries,
    ("GET", "/api/keywords"): get_keywords,
    ("GET", "/api/campaigns"): get_campaigns,
    ("POST", "/api/campaigns"): post_campaign,
    ("GET", "/api/replies"): get_replies,
    ("GET", "/api/openapi.json"): get_openapi,
    ("GET", "/dashboard"): redirect_dashboard,
    ("GET", "/dashboard/"): get_dashboard,
}


def create_api_app(
    duckdb_path: Path,
    *,
    default_tz: str = DEFAULT_TZ,
    store_timeout: float = DEFAULT_TIMEOUT,
    access: ApiAccess | None = None,
    pseudonymize_key: bytes | None = None,
) -> web.Application:
    """The analytics API and dashboard reading ``duckdb_path`` (which may not exist yet).

    ``access``: token and host names (analytics/guard.py); by default no token,
    so reads are open (serve it on loopback only) and writes are refused.
    """
    parse_zone(default_tz, param="default_tz")
    hide_server_version()
    app = web.Application(middlewares=[guard_middleware, _errors])
    app[ACCESS] = access or ApiAccess()
    app.on_response_prepare.append(add_protective_headers)
    app[CONFIG] = ApiConfig(
        duckdb_path=duckdb_path,
        default_tz=default_tz,
        store_timeout=store_timeout,
        pseudonymize_key=pseudonymize_key,
    )
    for (method, path), handler in _HANDLERS.items():
        app.router.add_route(method, path, handler)
    app.router.add_static("/dashboard/static", STATIC_DIR, append_version=False)
    return app
