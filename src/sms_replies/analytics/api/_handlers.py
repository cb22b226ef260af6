"""The request handlers: statistics, campaigns, replies, opt-outs, and the dashboard's
page and files.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import orjson
from aiohttp import web

from sms_replies.analytics.api._http import (
    CONFIG,
    ApiError,
    _json,
    _params,
    _read,
    _stats_query,
    _tz,
    _validate,
)
from sms_replies.analytics.api._params import (
    CampaignBody,
    CampaignsParams,
    KeywordsParams,
    LongNumberCampaignBody,
    OptoutsParams,
    RepliesParams,
    ShortNumberCampaignBody,
    SummaryParams,
    TimeseriesParams,
    _Params,
)
from sms_replies.analytics.campaigns import Campaign, campaign_stats, declare_campaign
from sms_replies.analytics.optouts import list_optouts
from sms_replies.analytics.params import parse_time, parse_zone
from sms_replies.analytics.queries import (
    ReplyFilter,
    list_replies,
    summary,
    timeseries,
    top_keywords,
)
from sms_replies.privacy import e164, is_pseudonym, pseudonymize

# The dashboard's files, beside this package (analytics/static/).
STATIC_DIR: Final = Path(__file__).parent.parent / "static"

# The page loads only its own files (the chart library is vendored) and calls only this API.
DASHBOARD_CSP: Final = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


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
    if end <= start:  # the one rule a JSON schema cannot state: not a 400 (see _params.py)
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
