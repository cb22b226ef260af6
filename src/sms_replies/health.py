"""One health view of the whole pipeline: asks each process's own health endpoint."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from sms_replies.broker.probe import check_broker
from sms_replies.errors import BrokerUnavailable
from sms_replies.settings import Settings, local_address

HEALTH_SETTINGS = web.AppKey("health_settings", Settings)


def worker_name(index: int) -> str:
    """Name of worker process ``index``: "worker", then "worker-1", "worker-2", ..."""
    return f"worker-{index}" if index else "worker"


def endpoints(settings: Settings) -> dict[str, str]:
    urls = {"ingest": f"http://{local_address(settings.http_host)}:{settings.http_port}/readyz"}
    worker_host = local_address(settings.worker_web_host)
    for i in range(settings.worker_processes):
        port = settings.model_copy(update={"worker_index": i}).worker_port
        urls[worker_name(i)] = f"http://{worker_host}:{port}/healthz"
    sinks_host = local_address(settings.sinks_web_host)
    urls["sinks"] = f"http://{sinks_host}:{settings.sinks_web_port}/healthz"
    return urls


async def _probe(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    try:
        async with session.get(url) as response:
            detail = await response.json(content_type=None)
            return {"up": response.status == 200, "status": response.status, "detail": detail}
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return {"up": False, "status": None, "detail": type(exc).__name__}


async def _probe_broker(bootstrap: str) -> dict[str, Any]:
    try:
        await check_broker(bootstrap)
    except BrokerUnavailable as exc:
        return {"up": False, "status": None, "detail": str(exc)}
    return {"up": True, "status": None, "detail": bootstrap}


async def pipeline_health(settings: Settings) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        names = list(endpoints(settings))
        probes = [_probe(session, u) for u in endpoints(settings).values()]
        if settings.kafka_bootstrap:
            names.append("broker")
            probes.append(_probe_broker(settings.kafka_bootstrap))
        results = await asyncio.gather(*probes)
    components = dict(zip(names, results, strict=True))
    return {"up": all(c["up"] for c in components.values()), "components": components}


async def handle_pipeline_health(request: web.Request) -> web.Response:
    report = await pipeline_health(request.app[HEALTH_SETTINGS])
    return web.json_response(report, status=200 if report["up"] else 503)


def add_health_route(app: web.Application, settings: Settings) -> None:
    app[HEALTH_SETTINGS] = settings
    app.router.add_get("/health", handle_pipeline_health)
