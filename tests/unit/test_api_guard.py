"""Access to the analytics API: token, Host, Origin, JSON-only writes (real HTTP, empty store)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from pydantic import SecretStr

from sms_replies import cli
from sms_replies.analytics.api import create_api_app
from sms_replies.analytics.guard import ApiAccess, api_access, host_allowed, is_loopback
from sms_replies.errors import ConfigError
from sms_replies.settings import Settings
from sms_replies.sinks.duckdb import DuckDBSink

TOKEN = "t0ken-of-the-analytics-api"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAMPAIGN = {"name": "spring-A", "short_number": True, "start": "2025-03-29", "end": "2025-03-30"}
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []
    async with DuckDBSink(tmp_path / "replies.duckdb", serve=False):
        pass  # its tables, empty: a store that does not exist answers 503, not figures

    async def start(access: ApiAccess | None = None) -> Client:
        app = create_api_app(tmp_path / "replies.duckdb", access=access)
        client: Client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


def with_token(*hosts: str) -> ApiAccess:
    return ApiAccess(token=SecretStr(TOKEN), allowed_hosts=frozenset(hosts))


# -- start-up --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("analytics.example.com", False),
    ],
)
def test_loopback_is_told_from_everything_else(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_beyond_loopback_the_api_needs_a_token() -> None:
    with pytest.raises(ConfigError, match=r"^SMS_REPLIES_API_TOKEN must be set: .*0\.0\.0\.0"):
        api_access(Settings.load(api_host="0.0.0.0"))
    with pytest.raises(ConfigError, match="SMS_REPLIES_API_TOKEN is too short"):
        api_access(Settings.load(api_host="0.0.0.0", api_token="short"))
    access = api_access(
        Settings.load(api_host="0.0.0.0", api_token=TOKEN, api_allowed_hosts="A.example,b")
    )
    assert access.token is not None
    assert access.allowed_hosts == {"a.example", "b"}
    assert api_access(Settings.load()).token is None  # loopback: may go without


def test_api_and_run_commands_refuse_to_start_beyond_loopback_without_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SMS_REPLIES_API_TOKEN", raising=False)
    started: list[str] = []
    monkeypatch.setattr(web, "run_app", lambda *a, **k: started.append("api"))
    monkeypatch.setattr(
        "sms_replies.supervisor.run_pipeline", lambda *a, **k: started.append("run")
    )
    runner = CliRunner()
    for command in ("api", "run"):
        result = runner.invoke(cli.main, [command, "--api-host", "0.0.0.0"])
        assert result.exit_code == 1, result.output
        [line] = result.output.strip().splitlines()
        assert line.startswith("Error: SMS_REPLIES_API_TOKEN must be set")
    assert started == []
    result = runner.invoke(cli.main, ["api", "--api-host", "0.0.0.0", "--api-token", TOKEN])
    assert result.exit_code == 0, result.output
    assert started == ["api"]


# -- token -----------------------------------------------------------------------


async def test_with_a_token_every_api_request_needs_it(serve: Callable[..., Any]) -> None:
    client = await serve(with_token())
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = await client.get("/api/summary", headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="sms-replies"'
        assert (await response.json())["error"] == "unauthorized"
    assert (await client.get("/api/openapi.json")).status == 401
    assert (await client.get("/api/nope")).status == 401  # nothing is told without it
    assert (await client.get("/api/summary", headers=AUTH)).status == 200
    assert (await client.get("/api/replies", headers=AUTH)).status == 200
    response = await client.post("/api/campaigns", json=CAMPAIGN, headers=AUTH)
    assert response.status == 201, await response.text()
    # The dashboard's files hold no data: the page must load to ask for the token.
    assert (await client.get("/dashboard/")).status == 200
    assert (await client.get("/dashboard/static/app.js")).status == 200


async def test_token_is_compared_in_constant_time_even_when_missing(
    serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    client = await serve(with_token())
    await client.get("/api/summary")
    await client.get("/api/summary", headers={"Authorization": "Bearer x"})
    await client.get("/api/summary", headers=AUTH)
    assert calls == [(b"", TOKEN.encode()), (b"x", TOKEN.encode()), (TOKEN.encode(),) * 2]


async def test_without_a_token_reads_are_open_and_writes_refused(
    serve: Callable[..., Any],
) -> None:
    client = await serve()
    assert (await client.get("/api/summary")).status == 200
    response = await client.post("/api/campaigns", json=CAMPAIGN)
    assert response.status == 403
    body = await response.json()
    assert body["error"] == "writes_disabled"
    assert "SMS_REPLIES_API_TOKEN" in body["message"]
    assert (await client.get("/api/campaigns")).status == 200
    assert (await (await client.get("/api/campaigns")).json())["campaigns"] == []


# -- browser path ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("authority", "allowed"),
    [
        ("127.0.0.1:8081", True),
        ("127.0.0.1", True),
        ("[::1]:8081", True),
        ("192.168.1.5:8081", True),
        ("localhost:8081", True),
        ("LOCALHOST", True),
        ("analytics.example.com", True),
        ("analytics.example.com:443", True),
        ("evil.example:8081", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io:8081", False),
        ("", False),
    ],
)
def test_host_names_served(authority: str, allowed: bool) -> None:
    assert host_allowed(authority, {"analytics.example.com"}) is allowed


async def test_a_rebound_host_name_is_refused_even_the_dashboard(
    serve: Callable[..., Any],
) -> None:
    client = await serve(with_token("analytics.example.com"))
    for path in ("/api/summary", "/dashboard/"):
        response = await client.get(path, headers={**AUTH, "Host": "evil.example:8081"})
        assert response.status == 403
        assert (await response.json())["error"] == "forbidden_host"
    ok = await client.get("/api/summary", headers={**AUTH, "Host": "analytics.example.com"})
    assert ok.status == 200


async def test_requests_from_another_site_are_refused(serve: Callable[..., Any]) -> None:
    client = await serve()  # no token: what a local browser could otherwise read
    host = f"127.0.0.1:{client.port}"
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://localhost:{client.port}"},  # another origin, same machine
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # e.g. a page of another port
    ):
        response = await client.get("/api/replies", headers={**headers, "Host": host})
        assert response.status == 403, headers
        assert (await response.json())["error"] == "forbidden_origin"
    same = {"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin", "Host": host}
    assert (await client.get("/api/replies", headers=same)).status == 200
    # A link from another site to the dashboard page still opens it.
    navigation = {"Sec-Fetch-Site": "cross-site", "Host": host}
    assert (await client.get("/dashboard/", headers=navigation)).status == 200


async def test_writes_must_be_json(serve: Callable[..., Any]) -> None:
    client = await serve(with_token())
    body = orjson.dumps(CAMPAIGN)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = await client.post(
            "/api/campaigns", data=body, headers={**AUTH, "Content-Type": content_type}
        )
        assert response.status == 415, content_type
        assert (await response.json())["error"] == "unsupported_media_type"
    response = await client.post("/api/campaigns", data=body, headers=AUTH)  # no type at all
    assert response.status == 415
    response = await client.post(
        "/api/campaigns", data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status == 201


async def test_answers_carry_no_versions_and_are_not_cached_or_framed(
    serve: Callable[..., Any],
) -> None:
    client = await serve(with_token())
    api = await client.get("/api/summary", headers=AUTH)
    page = await client.get("/dashboard/")
    refused = await client.get("/api/summary")
    for response in (api, page, refused):
        assert response.headers["Server"] == "sms-replies"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert api.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
