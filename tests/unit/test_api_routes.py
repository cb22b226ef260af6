"""The analytics API's router and its OpenAPI document come from one route table."""

from __future__ import annotations

import re
from pathlib import Path

from sms_replies.analytics.api import ROUTES, create_api_app, openapi_document


def _document_path(router_path: str) -> str:
    # aiohttp's "{name:regex}" is OpenAPI's "{name}".
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", router_path)


def test_every_routed_operation_is_documented_and_every_documented_one_routed(
    tmp_path: Path,
) -> None:
    app = create_api_app(tmp_path / "replies.duckdb")
    routed = {
        (route.method, _document_path(route.resource.canonical))
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    document = openapi_document()
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert routed == documented
    assert len(routed) == len(ROUTES)
