"""The routes (:data:`ROUTES`: what the router registers) and the OpenAPI 3.1 document
generated from them and from the parameter models.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from sms_replies.analytics.api._handlers import (
    get_campaigns,
    get_dashboard,
    get_keywords,
    get_optouts,
    get_replies,
    get_static,
    get_summary,
    get_timeseries,
    post_campaign,
    redirect_dashboard,
)
from sms_replies.analytics.api._http import CONFIG, _json
from sms_replies.analytics.api._params import (
    _ZONE_MARK,
    CampaignBody,
    CampaignsParams,
    KeywordsParams,
    OptoutsParams,
    RepliesParams,
    SummaryParams,
    TimeseriesParams,
)
from sms_replies.analytics.campaigns import Campaign, CampaignStats
from sms_replies.analytics.optouts import OptOutList
from sms_replies.analytics.params import DEFAULT_TZ, known_zones
from sms_replies.analytics.queries import KeywordCount, ReplyPage, Summary, Timeseries


async def get_openapi(request: web.Request) -> web.Response:
    return _json(openapi_document(request.app[CONFIG].default_tz))


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
