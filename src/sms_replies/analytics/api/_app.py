"""The application: ``create_api_app`` wires the middlewares, the configuration and
the routes.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from sms_replies.analytics.api._handlers import STATIC_FILES, _static_files
from sms_replies.analytics.api._http import CONFIG, ApiConfig, _errors
from sms_replies.analytics.api._openapi import ROUTES
from sms_replies.analytics.guard import ACCESS, ApiAccess, add_protective_headers, guard_middleware
from sms_replies.analytics.params import DEFAULT_TZ, parse_zone
from sms_replies.http_server import hide_server_version
from sms_replies.stores.readers import DEFAULT_TIMEOUT
from sms_replies.stores.url import StoreURL


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
