"""The aiohttp ingress: ``/callbacks/smspartner``, health and metrics.

The handler stays thin: check the request's limits and credentials, read the
parameters, :func:`parse_callback`, publish, answer. 200 only after the broker
acknowledged; 503 + Retry-After when it did not, so the provider retries; 4xx
for bad input, which is kept in the rejects topic for audit. Every answer is a
small JSON object without internal detail, errors of the router (404, 405) and
unexpected exceptions (500) included: see docs/security.md.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from sms_replies import metrics
from sms_replies.bounds import Bounds
from sms_replies.errors import BrokerUnavailable, InvalidCallback, SmsRepliesError
from sms_replies.http_server import hide_server_version
from sms_replies.ingest.audit import TokenBucket, audit_record
from sms_replies.ingest.form import FormDecodeError, parse_form
from sms_replies.ingest.forwarded import Network, request_client, trusted_networks
from sms_replies.ingest.openapi import DOCUMENT_PATH, callbacks_openapi
from sms_replies.ingest.parsing import (
    ATTRIBUTION_PARAMS,
    NO_ATTRIBUTION,
    parse_attribution,
    parse_callback,
)
from sms_replies.ingest.publisher import Publisher
from sms_replies.ingest.signature import SignatureError, verify_signature
from sms_replies.privacy import key_bytes, pseudonymize_part, scrub_body, scrub_pairs
from sms_replies.settings import Settings

log = logging.getLogger(__name__)

CALLBACK_PATH = "/callbacks/smspartner"
RETRY_AFTER_SECONDS = "5"
# Request line = method + path + '?' + query + version: room for the path around the query.
REQUEST_LINE_SLACK = 1024

PUBLISHER = web.AppKey("publisher", Publisher)
SETTINGS = web.AppKey("settings", Settings)
# Derived from the settings once, not per callback.
BOUNDS = web.AppKey("bounds", Bounds)
PSEUDONYMIZE_KEY = web.AppKey("pseudonymize_key", bytes)
UNKNOWN_PATH_AUDITS = web.AppKey("unknown_path_audits", TokenBucket)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple[Network, ...])
# Refusals by the router (unknown path, wrong method): scanners' noise, audited at a bounded rate.
RATE_LIMITED_STATUSES = frozenset({404, 405})

# Resolved once: a label lookup per callback showed in the profile.
_UNAVAILABLE = metrics.CALLBACKS.labels("unavailable")
_ACCEPTED_BODY = orjson.dumps({"status": "accepted"})

_JSON_TYPE = "application/json"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_UNSUPPORTED_TYPE = (
    "unsupported content type: use application/x-www-form-urlencoded, "
    "multipart/form-data or application/json"
)


def create_app(settings: Settings, publisher: Publisher | None = None) -> web.Application:
    hide_server_version()
    # No middleware: with any, aiohttp runs every callback through one coroutine
    # frame per middleware plus one of its own. The client address behind a proxy
    # is worked out by the audit, its one reader; errors become JSON in the
    # handlers and in routes of their own (_json_errors, _add_error_routes).
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # Let a query up to max_query_bytes reach the handler (answered 414 there,
        # and audited); a longer request line is refused by aiohttp's parser.
        handler_args={"max_line_size": max(8190, settings.max_query_bytes + REQUEST_LINE_SLACK)},
    )
    app[SETTINGS] = settings
    app[BOUNDS] = Bounds.of(settings)
    pseudonymize_key = key_bytes(settings.pseudonymize_key)
    if pseudonymize_key is not None:
        app[PSEUDONYMIZE_KEY] = pseudonymize_key
    app[PUBLISHER] = publisher or Publisher(
        settings.bootstrap,
        settings.topics,
        timeout=settings.publish_timeout,
        group_wait=settings.publish_group_wait,
        max_record_bytes=app[BOUNDS].max_value_bytes,
    )
    app[UNKNOWN_PATH_AUDITS] = TokenBucket(
        settings.audit_unknown_path_rate, settings.audit_unknown_path_burst
    )
    app[TRUSTED_PROXIES] = trusted_networks(settings.trusted_proxies)
    app.cleanup_ctx.append(_publisher_lifecycle)
    app.router.add_route("GET", CALLBACK_PATH, handle_callback)  # its own _json_errors inside
    app.router.add_route("POST", CALLBACK_PATH, handle_callback)
    app.router.add_get("/healthz", _json_errors(handle_health))
    app.router.add_get("/readyz", _json_errors(handle_ready))
    app.router.add_get("/metrics", _json_errors(metrics.handle_metrics))
    app.router.add_get(DOCUMENT_PATH, _json_errors(handle_openapi))
    _add_error_routes(app)
    return app


def _add_error_routes(app: web.Application) -> None:
    """The router's refusals (405 on a known path, 404 elsewhere) as routes answering JSON.

    Added last: a known path's own methods match first; any other method on it is
    a 405 naming them (as aiohttp's own), and a path no resource knows is a 404.
    """
    for resource in list(app.router.resources()):
        if isinstance(resource, web.Resource):  # every one added above (plain paths)
            allowed = ",".join(sorted({route.method for route in resource}))
            resource.add_route(hdrs.METH_ANY, _json_errors(_refusal(405, {"Allow": allowed})))
    anywhere = _AnyPath("/")
    app.router.register_resource(anywhere)
    anywhere.add_route(hdrs.METH_ANY, _json_errors(_refusal(404)))


class _AnyPath(web.PlainResource):
    """Every request target, ``*`` and paths with a newline (%0A) included: the router
    tries it last (its index is "/", the end of the router's walk up a path). A public
    ``/{path:...}`` route never sees ``*``, hence the private ``_match`` (aiohttp < 4,
    guarded by test_any_request_target_is_a_json_404_kept_for_audit)."""

    def _match(self, path: str) -> dict[str, str] | None:
        return {}


def _refusal(status: int, headers: dict[str, str] | None = None) -> Handler:
    async def refuse(request: web.Request) -> web.StreamResponse:
        rejected = _Rejected(status, _phrase(status))
        return await _reject(request, request.app[PUBLISHER], rejected, headers=headers)

    return refuse


async def _publisher_lifecycle(app: web.Application) -> AsyncIterator[None]:
    publisher = app[PUBLISHER]
    try:
        await publisher.connect()
    except BrokerUnavailable as exc:  # come up anyway: /readyz says 503 until it connects
        log.warning("%s; will retry on the first callback", exc)
    yield
    await publisher.stop()


class _Rejected(SmsRepliesError):
    """A callback refused with ``status``; answered as JSON and kept for audit."""

    def __init__(
        self,
        status: int,
        reason: str,
        problems: dict[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.problems = problems or {}
        self.close = close  # answer with Connection: close (body left unread)


def _json_errors(handler: Handler) -> Handler:
    """``handler`` with aiohttp's error pages (4xx) and any unexpected exception as JSON."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return await _http_error(request, exc)
        except Exception as exc:
            return await _internal_error(request, exc)

    return wrapper


async def _http_error(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    """An HTTP error raised inside a handler: a reject like the handler's own, counted,
    kept for audit and answered as JSON."""
    if exc.status < 400:
        raise exc
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    rejected = _Rejected(exc.status, _phrase(exc.status))
    return await _reject(request, request.app[PUBLISHER], rejected, headers=headers)


async def _internal_error(request: web.Request, exc: Exception) -> web.StreamResponse:
    """An unexpected exception: 500, never more than "internal error"; the traceback
    goes to the log only."""
    log.error("internal error on %s %s", request.method, request.path, exc_info=exc)
    try:
        return await _reject(request, request.app[PUBLISHER], _Rejected(500, "internal error"))
    except Exception:
        log.exception("internal error while rejecting %s %s", request.method, request.path)
        return _json({"error": "internal error"}, status=500)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


async def handle_callback(request: web.Request) -> web.StreamResponse:
    # _json_errors inline (no wrapper: one coroutine frame less per callback).
    try:
        received_at_ms = time.time_ns() // 1_000_000
        app = request.app
        settings = app[SETTINGS]
        publisher = app[PUBLISHER]
        try:
            query = _check_query(request, settings)
            _check_token(query, settings)
            attribution = NO_ATTRIBUTION
            # Most callback URLs carry neither: one scan instead of parsing and filtering.
            if any(key in ATTRIBUTION_PARAMS for key, _ in query):
                try:
                    # Our URL's campaign/tag: kept out of the provider's fields (and so
                    # out of the signed set), whatever the body holds.
                    attribution = parse_attribution(query)
                except InvalidCallback as exc:
                    raise _Rejected(exc.status, "invalid callback", exc.problems) from None
                query = [(key, value) for key, value in query if key not in ATTRIBUTION_PARAMS]
            params = await _read_params(request, query, settings)
            _check_signature(params, settings)
            try:
                part = parse_callback(params, received_at_ms, app[BOUNDS], attribution)
                # With a key, the number is replaced before anything is published.
                part = pseudonymize_part(part, app.get(PSEUDONYMIZE_KEY))
            except InvalidCallback as exc:
                raise _Rejected(exc.status, "invalid callback", exc.problems) from None
        except _Rejected as rejected:
            return await _reject(request, publisher, rejected)
        try:
            await publisher.publish(part)
        except BrokerUnavailable as exc:
            log.warning("callback not acknowledged, answering 503: %s", exc)
            _UNAVAILABLE.inc()
            return _json(
                {"error": "temporarily unavailable, retry later"},
                status=503,
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
        # Counted as accepted by the publisher, a record at a time.
        return web.Response(body=_ACCEPTED_BODY, content_type="application/json")
    except web.HTTPException as exc:
        return await _http_error(request, exc)
    except Exception as exc:
        return await _internal_error(request, exc)


def _query(request: web.Request) -> tuple[list[tuple[str, str]], int]:
    """The query's parameters decoded without U+FFFD (ingest/form.py), and the fallbacks."""
    raw = request.rel_url.raw_query_string
    if "%" not in raw and raw.isascii():
        # Nothing to decode but '+': split here, as yarl's request.query would
        # (parse_qsl, blank values kept), without its MultiDict (1-2 us a callback).
        pairs: list[tuple[str, str]] = []
        for pair in raw.replace("+", " ").split("&"):
            if pair:
                name, _, value = pair.partition("=")
                pairs.append((name, value))
        return pairs, 0
    pairs = list(request.query.items())
    # Escapes: yarl's decoding (fast, cached) is the same as ours unless it had to put
    # U+FFFD for bytes that are not UTF-8: only then decode again ourselves.
    if not any("\ufffd" in key or "\ufffd" in value for key, value in pairs):
        return pairs, 0
    # The HTTP parser lets only ASCII through in the request target.
    return parse_form(raw.encode("ascii", "replace"))


def _check_query(request: web.Request, settings: Settings) -> list[tuple[str, str]]:
    if len(request.rel_url.raw_query_string) > settings.max_query_bytes:
        raise _Rejected(414, "query string too long")
    query, fallbacks = _query(request)
    if fallbacks:
        metrics.INGRESS_NON_UTF8_VALUES.inc(fallbacks)
    if len(query) > settings.max_params:
        raise _Rejected(400, "invalid callback", {"callback": "too many parameters"})
    return query


def _check_token(query: list[tuple[str, str]], settings: Settings) -> None:
    if settings.callback_token is None:
        return
    # Constant time whether the token is missing, short, long or wrong.
    given = next((v for k, v in query if k == "token"), "").encode("utf-8", "replace")
    expected = settings.callback_token.get_secret_value().encode()
    if not hmac.compare_digest(given, expected):
        raise _Rejected(401, "missing or wrong token")


def _check_signature(params: dict[str, Any], settings: Settings) -> None:
    if settings.signature_secret is None:
        return
    try:
        verify_signature(
            params,
            settings.signature_secret.get_secret_value(),
            settings.signature_method,
            now=time.time(),
            max_skew=settings.signature_max_skew,
        )
    except SignatureError as exc:
        raise _Rejected(401, exc.reason) from None


async def _read_params(
    request: web.Request, query: list[tuple[str, str]], settings: Settings
) -> dict[str, Any]:
    """Query and body parameters as one dict; a key given twice is refused."""
    items: list[tuple[str, Any]] = list(query)
    if request.method == "POST" and request.body_exists:
        items.extend(await _read_body(request, settings))
    if len(items) > settings.max_params:
        raise _Rejected(400, "invalid callback", {"callback": "too many parameters"})
    params: dict[str, Any] = {}
    duplicated: set[str] = set()
    for key, value in items:
        if key in params:
            duplicated.add(key)
        params[key] = value
    if duplicated:
        problems = {key: "parameter given more than once" for key in sorted(duplicated)}
        raise _Rejected(400, "invalid callback", problems)
    return params


async def _read_body(request: web.Request, settings: Settings) -> list[tuple[str, Any]]:
    content_type = request.content_type
    if content_type != _JSON_TYPE and content_type not in _FORM_TYPES:
        raise _Rejected(415, _UNSUPPORTED_TYPE)
    declared = request.content_length
    if declared is not None and declared > settings.max_body_bytes:
        raise _Rejected(413, "body too large", close=True)  # refused before reading a byte
    try:
        if request.content.is_eof():
            # The whole body is in already (a callback fits in a segment or two):
            # nothing to wait for, so no timer (asyncio.timeout: 8-9 us a callback).
            return await _body_params(request, content_type)
        async with asyncio.timeout(settings.body_timeout):
            return await _body_params(request, content_type)
    except web.HTTPRequestEntityTooLarge:  # chunked, or longer than its Content-Length said
        raise _Rejected(413, "body too large", close=True) from None
    except TimeoutError:
        raise _Rejected(408, "body not received in time", close=True) from None
    except orjson.JSONDecodeError:
        raise _Rejected(400, "invalid callback", {"body": "not valid JSON"}) from None
    except UnicodeDecodeError:
        raise _Rejected(400, "invalid callback", {"body": "not valid UTF-8"}) from None
    except FormDecodeError as exc:
        raise _Rejected(400, "invalid callback", {"body": str(exc)}) from None
    except _Rejected:
        raise
    except Exception as exc:  # the body's framing or encoding is the client's doing
        log.debug("malformed body: %r", exc)
        raise _Rejected(400, "invalid callback", {"body": "malformed body"}, close=True) from None


async def _body_params(request: web.Request, content_type: str) -> list[tuple[str, Any]]:
    if content_type == _JSON_TYPE:
        body = orjson.loads(await request.read())
        if not isinstance(body, dict):
            raise _Rejected(400, "invalid callback", {"body": "expected a JSON object"})
        return list(body.items())
    if content_type == "application/x-www-form-urlencoded":
        pairs, fallbacks = parse_form((await request.read()).rstrip(), request.charset)
        if fallbacks:
            metrics.INGRESS_NON_UTF8_VALUES.inc(fallbacks)
        return pairs
    form = await request.post()  # multipart: each field decoded with its charset
    return [(key, value) for key, value in form.items() if isinstance(value, str)]


async def _reject(
    request: web.Request,
    publisher: Publisher,
    rejected: _Rejected,
    headers: dict[str, str] | None = None,
) -> web.Response:
    metrics.CALLBACKS.labels(f"rejected_{rejected.status}").inc()
    if rejected.status in RATE_LIMITED_STATUSES and not request.app[UNKNOWN_PATH_AUDITS].take(
        time.monotonic()
    ):
        metrics.REJECTS_NOT_AUDITED.labels("rate_limited").inc()
    else:
        await _audit(request, publisher, rejected)
    body: dict[str, Any] = {"error": rejected.reason}
    if rejected.problems:
        body["problems"] = rejected.problems
    response = _json(body, status=rejected.status, headers=headers)
    if rejected.close:
        response.force_close()
    return response


async def _audit(request: web.Request, publisher: Publisher, rejected: _Rejected) -> None:
    # Only the body already read is kept: a body refused for its size never is.
    body = getattr(request, "_read_bytes", None)
    key = key_bytes(request.app[SETTINGS].pseudonymize_key)  # no number in clear in the audit
    audit = audit_record(
        status=rejected.status,
        reason=rejected.reason,
        problems=rejected.problems,
        method=request.method,
        path=request.path,
        query=scrub_pairs(_query(request)[0], key),
        content_type=request.content_type,
        body=scrub_body(body if isinstance(body, bytes) else None, request.content_type, key),
        remote=request_client(request, request.app[TRUSTED_PROXIES]),
        received_at_ms=time.time_ns() // 1_000_000,
        max_bytes=request.app[SETTINGS].audit_max_bytes,
    )
    try:
        await publisher.publish_reject(audit)
    except BrokerUnavailable as exc:
        log.warning("rejected request not kept for audit (%s): %s", exc, audit[:500])
    log.info(
        "rejected %s %s: %s %s", request.method, request.path, rejected.status, rejected.reason
    )


async def handle_health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def handle_ready(request: web.Request) -> web.Response:
    publisher = request.app[PUBLISHER]
    try:
        await publisher.check()
    except BrokerUnavailable:
        return _json({"status": "broker unavailable"}, status=503)
    return _json({"status": "ready"})


async def handle_openapi(request: web.Request) -> web.Response:
    # Private like /metrics: the proxy forwards only /callbacks/ (deploy/Caddyfile).
    settings = request.app[SETTINGS]
    return _json(callbacks_openapi(Bounds.of(settings), settings.max_params))


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )
