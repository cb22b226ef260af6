"""The aiohttp ingress: ``/callbacks/smspartner``, health and metrics.

The handler stays thin: read parameters, :func:`parse_callback`, publish,
answer. 200 only after the broker acknowledged; 503 + Retry-After when it did
not, so the provider retries; 4xx for bad input, which is kept in the rejects
topic for audit. No response carries internal detail.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sms_replies import metrics
from sms_replies.errors import BrokerUnavailable, InvalidCallback
from sms_replies.ingest.parsing import parse_callback
from sms_replies.ingest.publisher import Publisher
from sms_replies.settings import Settings

log = logging.getLogger(__name__)

CALLBACK_PATH = "/callbacks/smspartner"
RETRY_AFTER_SECONDS = "5"

PUBLISHER = web.AppKey("publisher", Publisher)
SETTINGS = web.AppKey("settings", Settings)

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def create_app(settings: Settings, publisher: Publisher | None = None) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[PUBLISHER] = publisher or Publisher(
        settings.bootstrap, settings.topics, timeout=settings.publish_timeout
    )
    app.cleanup_ctx.append(_publisher_lifecycle)
    app.router.add_route("GET", CALLBACK_PATH, handle_callback)
    app.router.add_route("POST", CALLBACK_PATH, handle_callback)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/readyz", handle_ready)
    app.router.add_get("/metrics", handle_metrics)
    return app


async def _publisher_lifecycle(app: web.Application) -> AsyncIterator[None]:
    publisher = app[PUBLISHER]
    try:
        await publisher.connect()
    except BrokerUnavailable as exc:  # come up anyway: /readyz says 503 until it connects
        log.warning("%s; will retry on the first callback", exc)
    yield
    await publisher.stop()


class _Rejected(Exception):
    def __init__(self, status: int, reason: str, problems: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.problems = problems or {}


async def handle_callback(request: web.Request) -> web.Response:
    received_at_ms = time.time_ns() // 1_000_000
    settings = request.app[SETTINGS]
    publisher = request.app[PUBLISHER]
    try:
        _check_token(request, settings)
        params = await _read_params(request)
        try:
            part = parse_callback(params, received_at_ms)
        except InvalidCallback as exc:
            raise _Rejected(exc.status, "invalid callback", exc.problems) from None
    except _Rejected as rejected:
        return await _reject(request, publisher, rejected)
    try:
        await publisher.publish(part)
    except BrokerUnavailable as exc:
        log.warning("callback not acknowledged, answering 503: %s", exc)
        metrics.CALLBACKS.labels("unavailable").inc()
        return _json(
            {"error": "temporarily unavailable, retry later"},
            status=503,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    metrics.CALLBACKS.labels("accepted").inc()
    return _json({"status": "accepted"})


def _check_token(request: web.Request, settings: Settings) -> None:
    if settings.callback_token is None:
        return
    given = request.query.get("token", "")
    expected = settings.callback_token.get_secret_value()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise _Rejected(401, "missing or wrong token")


async def _read_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = {key: request.query.getone(key) for key in request.query}
    if request.method != "POST" or not request.body_exists:
        return params
    content_type = request.content_type
    try:
        if content_type == "application/json":
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise _Rejected(400, "invalid callback", {"body": "expected a JSON object"})
            params.update(body)
        elif content_type in _FORM_TYPES:
            form = await request.post()
            params.update({key: form.getone(key) for key in form if isinstance(form[key], str)})
        else:
            raise _Rejected(415, f"unsupported content type {content_type!r}")
    except orjson.JSONDecodeError:
        raise _Rejected(400, "invalid callback", {"body": "not valid JSON"}) from None
    except web.HTTPRequestEntityTooLarge:
        raise _Rejected(413, "body too large") from None
    except UnicodeDecodeError:
        raise _Rejected(400, "invalid callback", {"body": "not valid UTF-8"}) from None
    return params


async def _reject(request: web.Request, publisher: Publisher, rejected: _Rejected) -> web.Response:
    metrics.CALLBACKS.labels(f"rejected_{rejected.status}").inc()
    audit = orjson.dumps(
        {
            "status": rejected.status,
            "reason": rejected.reason,
            "problems": rejected.problems,
            "method": request.method,
            "path": request.path,
            # The token is our secret: never keep it in the audit trail.
            "query": {k: v for k, v in request.query.items() if k != "token"},
            "content_type": request.content_type,
            "body": _body_for_audit(request),
            "remote": request.remote,
            "received_at_ms": time.time_ns() // 1_000_000,
        }
    )
    try:
        await publisher.publish_reject(audit)
    except BrokerUnavailable as exc:
        log.warning("rejected request not kept for audit (%s): %s", exc, audit[:500])
    log.info(
        "rejected %s %s: %s %s", request.method, request.path, rejected.status, rejected.reason
    )
    body: dict[str, Any] = {"error": rejected.reason}
    if rejected.problems:
        body["problems"] = rejected.problems
    return _json(body, status=rejected.status)


def _body_for_audit(request: web.Request) -> str | None:
    # Only what was already read; a too-large body is not kept.
    raw = getattr(request, "_read_bytes", None)
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else None


async def handle_health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def handle_ready(request: web.Request) -> web.Response:
    publisher = request.app[PUBLISHER]
    try:
        await publisher.connect()
    except BrokerUnavailable:
        return _json({"status": "broker unavailable"}, status=503)
    return _json({"status": "ready"})


async def handle_metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )
