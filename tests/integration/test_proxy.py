"""deploy/Caddyfile, run by a real Caddy in front of a real ingress and a real analytics API.

Only /callbacks/ reaches the ingress, and the client address the ingress
records is the one Caddy saw, never one the client claims. /dashboard/ and
/api/ reach the API (reading PostgreSQL, as in docker-compose.yml) only from
the client addresses allowed (PROXY_ANALYTICS_CLIENTS), and the API still asks
for its token. Clients
connect from other loopback addresses (127.0.0.2, 127.0.0.3) than the proxy's
(127.0.0.1), so that the servers can tell them apart.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from pydantic import SecretStr

from sms_replies.broker.embedded import free_port
from sms_replies.procs import spawn, terminate
from sms_replies.sinks.postgres import PostgresSink
from tests.analytics_sample import SAMPLE_REPLIES
from tests.integration.conftest import Processes, consume, wait_ready

pytestmark = pytest.mark.integration

CADDYFILE = Path(__file__).parents[2] / "deploy" / "Caddyfile"
PROXY_ADDRESS = "127.0.0.1"
CLIENT_ADDRESS = "127.0.0.3"
DIRECT_ADDRESS = "127.0.0.2"
FORGED = {"X-Forwarded-For": "6.6.6.6"}
API_TOKEN = "proxy-test-api-token-0123456789"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"  # the machine's PostgreSQL


@pytest.fixture
def ingress_port(processes: Processes) -> int:
    processes.settings = processes.settings.model_copy(update={"trusted_proxies": [PROXY_ADDRESS]})
    processes.start("ingest")
    return processes.settings.http_port


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """The sample replies written by the PostgreSQL sink into a schema of this test's own."""
    name = f"ops_proxy_{uuid.uuid4().hex[:12]}"
    async with PostgresSink(PG_DSN, schema=name) as sink:
        await sink.write(SAMPLE_REPLIES)
    try:
        yield name
    finally:
        con = await asyncpg.connect(PG_DSN)
        try:
            await con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await con.close()


@pytest.fixture
async def api_port(processes: Processes, pg_schema: str) -> int:
    """`sms-replies api` as docker-compose.yml runs it: with a token, reading PostgreSQL."""
    processes.settings = processes.settings.model_copy(
        update={"api_port": free_port(), "api_token": SecretStr(API_TOKEN)}
    )
    processes.start("api", SMS_REPLIES_ANALYTICS_STORE=f"{PG_DSN}?schema={pg_schema}")
    port = processes.settings.api_port
    await wait_ready(f"http://127.0.0.1:{port}/dashboard/")
    return port


@pytest.fixture
def proxy(ingress_port: int, api_port: int, tmp_path: Path) -> Iterator[str]:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.fail("caddy is not installed: run `make system-deps`")
    port = free_port()
    env = {
        **os.environ,
        "HOME": str(tmp_path),  # Caddy's own data and config
        "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
        "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
        "PROXY_SITE": f"http://{PROXY_ADDRESS}:{port}",
        "PROXY_UPSTREAM": f"127.0.0.1:{ingress_port}",
        "PROXY_API_UPSTREAM": f"127.0.0.1:{api_port}",
        "PROXY_ANALYTICS_CLIENTS": f"{CLIENT_ADDRESS}/32",  # not DIRECT_ADDRESS
    }
    with (tmp_path / "caddy.log").open("ab") as log:
        process = spawn(
            [caddy, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        yield f"http://{PROXY_ADDRESS}:{port}"
    finally:
        terminate(process, 10)


async def get_from(address: str, url: str, **headers: str) -> tuple[int, dict[str, str]]:
    """GET ``url`` from the local ``address``: status and response headers."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, headers=headers) as response,
    ):
        await response.read()
        return response.status, dict(response.headers)


async def get_json_from(address: str, url: str, **headers: str) -> Any:
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, headers=headers) as response,
    ):
        assert response.status == 200
        return await response.json()


async def wait_proxy(base: str) -> None:
    for _ in range(100):
        try:
            await get_from(CLIENT_ADDRESS, f"{base}/")
            return
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    pytest.fail("caddy did not start (see caddy.log)")


async def test_the_proxy_forwards_only_callbacks_to_everyone(
    processes: Processes, ingress_port: int, proxy: str
) -> None:
    await wait_ready(f"http://127.0.0.1:{ingress_port}/readyz")
    await wait_proxy(proxy)
    query = "msisdn=33612345678&to=33756781234&text=Oui&type=text"
    for address in (CLIENT_ADDRESS, DIRECT_ADDRESS):
        url = f"{proxy}/callbacks/smspartner?{query}&messageId=020000000{address[-1]}"
        status, headers = await get_from(address, url)
        assert status == 200
        assert "Server" not in headers
    for path in ("/healthz", "/readyz", "/metrics", "/health", "/", "/dashboardx"):
        for address in (CLIENT_ADDRESS, DIRECT_ADDRESS):
            status, _ = await get_from(address, f"{proxy}{path}")
            assert status == 404, (address, path)
    # The analytics paths, from an address not in PROXY_ANALYTICS_CLIENTS: as if absent.
    for path in ("/api/replies", "/api/summary", "/dashboard/", "/dashboard"):
        status, _ = await get_from(DIRECT_ADDRESS, f"{proxy}{path}")
        assert status == 404, path


async def test_the_dashboard_and_api_through_the_proxy_from_allowed_clients_with_the_token(
    processes: Processes, api_port: int, proxy: str
) -> None:
    await wait_proxy(proxy)
    status, headers = await get_from(CLIENT_ADDRESS, f"{proxy}/dashboard/")
    assert status == 200  # the page itself is code, no data: served without the token
    assert headers["Content-Type"].startswith("text/html")
    assert "Server" not in headers
    status, _ = await get_from(CLIENT_ADDRESS, f"{proxy}/dashboard/static/app.js")
    assert status == 200
    status, headers = await get_from(CLIENT_ADDRESS, f"{proxy}/api/summary")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    summary = f"{proxy}/api/summary?since=2025-03-29&until=2025-03-31"
    status, _ = await get_from(CLIENT_ADDRESS, summary, **bearer)
    assert status == 200
    assert (await get_json_from(CLIENT_ADDRESS, summary, **bearer))["totals"]["replies"] == 8
    # The API's other routes stay behind the proxy, token or not.
    for path in ("/metrics", "/health"):
        status, _ = await get_from(CLIENT_ADDRESS, f"{proxy}{path}", **bearer)
        assert status == 404, path


async def test_the_audit_keeps_the_address_the_proxy_saw(
    processes: Processes, ingress_port: int, proxy: str
) -> None:
    await wait_ready(f"http://127.0.0.1:{ingress_port}/readyz")
    await wait_proxy(proxy)
    # Two refused callbacks claiming another address: through the proxy, then directly.
    via_proxy = f"{proxy}/callbacks/smspartner?text=via-proxy"
    assert (await get_from(CLIENT_ADDRESS, via_proxy, **FORGED))[0] == 400
    direct = f"http://127.0.0.1:{ingress_port}/callbacks/smspartner?text=direct"
    assert (await get_from(DIRECT_ADDRESS, direct, **FORGED))[0] == 400

    settings = processes.settings
    audits = [
        orjson.loads(v) for v in await consume(settings.bootstrap, settings.topics.rejects, 2)
    ]
    remote_by_text = {audit["query"]["text"]: audit["remote"] for audit in audits}
    assert remote_by_text == {"via-proxy": CLIENT_ADDRESS, "direct": DIRECT_ADDRESS}
