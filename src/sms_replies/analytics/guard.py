"""Who may use the analytics API: a bearer token, and no cross-site use through a browser.

The API returns phone numbers and texts and declares campaigns, so:

* **Token** (``SMS_REPLIES_API_TOKEN``): when set, every request but the
  dashboard's own files needs ``Authorization: Bearer <token>`` (compared in
  constant time). It must be set when the API listens beyond loopback: the API
  refuses to start there without one. Without a token (loopback only), reads
  are open to local processes and writes are refused.
* **Host** (DNS rebinding): a page of ``evil.example`` whose name is made to
  resolve to 127.0.0.1 sends ``Host: evil.example``. Only IP literals,
  ``localhost`` and the names in ``SMS_REPLIES_API_ALLOWED_HOSTS`` are served.
* **Origin** (cross-site requests from an analyst's browser): an ``Origin``
  other than the API's own, or ``Sec-Fetch-Site: cross-site``/``same-site``,
  is refused on every route but the dashboard's files, which hold no data.
* **JSON-only writes**: a write must be ``application/json`` (415 otherwise),
  which an HTML form cannot send and which a cross-origin script can only send
  after a CORS preflight the API never grants.

:func:`refusal` is pure (request facts in, refusal or ``None`` out);
:func:`guard_middleware` applies it.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from pydantic import SecretStr

from sms_replies.errors import ConfigError
from sms_replies.settings import Settings

MIN_TOKEN_LENGTH: Final = 16
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
JSON_TYPE: Final = "application/json"
# Fetch metadata values of requests a page of another site made.
CROSS_SITE: Final = frozenset({"cross-site", "same-site"})
TOKEN_HELP: Final = (
    'python -c "import secrets; print(secrets.token_urlsafe(32))"'  # shown in errors
)


@dataclass(frozen=True, slots=True)
class ApiAccess:
    """The API's access rules; the default is loopback without a token (writes refused)."""

    token: SecretStr | None = None
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    error: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


def is_loopback(host: str) -> bool:
    """Whether a server listening on ``host`` is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: may resolve to anything


def api_access(settings: Settings) -> ApiAccess:
    """The rules for ``settings``; ConfigError (naming the setting) when they are unsafe."""
    token = settings.api_token
    if token is None and not is_loopback(settings.api_host):
        raise ConfigError(
            f"SMS_REPLIES_API_TOKEN must be set: the analytics API listens on "
            f"{settings.api_host} (SMS_REPLIES_API_HOST), beyond loopback; make one with "
            f"{TOKEN_HELP}"
        )
    if token is not None and len(token.get_secret_value()) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"SMS_REPLIES_API_TOKEN is too short: use at least {MIN_TOKEN_LENGTH} characters "
            f"({TOKEN_HELP})"
        )
    return ApiAccess(
        token=token, allowed_hosts=frozenset(h.lower() for h in settings.api_allowed_hosts)
    )


def _hostname(authority: str) -> str:
    """``host:port`` or ``[v6]:port`` -> the host, lower case, without brackets."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")].lower() if "]" in authority else ""
    return authority.rsplit(":", 1)[0].lower() if authority.count(":") == 1 else authority.lower()


def host_allowed(authority: str, allowed: Collection[str]) -> bool:
    """An IP literal, ``localhost`` or an allowed name: never a name a stranger controls."""
    name = _hostname(authority)
    if not name:
        return False
    if name == "localhost" or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True  # reached by address: no DNS, nothing to rebind


def _is_dashboard_file(method: str, path: str) -> bool:
    # The page, its script and styles: no data, loaded by a navigation (which
    # may come from a link on another site) before the token is known.
    return method in ("GET", "HEAD") and (path == "/dashboard" or path.startswith("/dashboard/"))


def refusal(
    access: ApiAccess,
    *,
    method: str,
    path: str,
    headers: Mapping[str, str],
    content_type: str,
    routed: bool = True,
) -> Refusal | None:
    """Why this request is refused, or ``None``. ``headers`` is case-insensitive.

    ``routed``: the path and method have a handler. When not (404, 405), the body
    is never read, so its type does not matter: the router's answer (405 with
    ``Allow``) is the useful one.
    """
    host = headers.get("Host", "")
    if not host_allowed(host, access.allowed_hosts):
        return Refusal(
            403,
            "forbidden_host",
            "this host name is not served: reach the API by IP address or localhost, "
            "or add the name to SMS_REPLIES_API_ALLOWED_HOSTS",
        )
    if _is_dashboard_file(method, path):
        return None
    origin = headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        return Refusal(403, "forbidden_origin", "requests from another site are refused")
    if headers.get("Sec-Fetch-Site", "").lower() in CROSS_SITE:
        return Refusal(403, "forbidden_origin", "requests from another site are refused")
    write = method not in READ_METHODS
    if access.token is not None:
        if not _bearer_matches(headers.get("Authorization", ""), access.token):
            return Refusal(
                401,
                "unauthorized",
                "send the API token: Authorization: Bearer <SMS_REPLIES_API_TOKEN>",
                {"WWW-Authenticate": 'Bearer realm="sms-replies"'},
            )
    elif write:
        return Refusal(
            403,
            "writes_disabled",
            "writes need a token: set SMS_REPLIES_API_TOKEN on the API and send "
            "Authorization: Bearer <token> (or use `sms-replies campaign add`)",
        )
    if write and routed and content_type != JSON_TYPE:
        return Refusal(415, "unsupported_media_type", "send the body as application/json")
    return None


def _bearer_matches(authorization: str, token: SecretStr) -> bool:
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    # Constant time whether the token is missing, short, long or wrong.
    return hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), token.get_secret_value().encode()
    )


ACCESS: Final = web.AppKey("sms_replies_api_access", ApiAccess)


@web.middleware
async def guard_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    refused = refusal(
        request.app[ACCESS],
        method=request.method,
        path=request.path,
        headers=request.headers,
        content_type=request.content_type,
        routed=request.match_info.http_exception is None,
    )
    if refused is None:
        return await handler(request)
    return web.json_response(
        {"error": refused.error, "message": refused.message},
        status=refused.status,
        headers=dict(refused.headers),
        dumps=lambda value: orjson.dumps(value).decode(),
    )


async def add_protective_headers(request: web.Request, response: web.StreamResponse) -> None:
    """No caching of data, no MIME sniffing, no use from other origins or frames."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if not _is_dashboard_file(request.method, request.path):
        response.headers.setdefault("Cache-Control", "no-store")
