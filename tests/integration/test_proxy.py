"""deploy/Caddyfile, run by a real Caddy in front of a real ingress.

Only /callbacks/ reaches the ingress, and the client address the ingress
records is the one Caddy saw, never one the client claims. Clients connect
from other loopback addresses (127.0.0.2, 127.0.0.3) than the proxy's
(127.0.0.1), so that the ingress can tell them apart.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from sms_replies.broker.embedded import free_port
from sms_replies.procs import spawn, terminate
from tests.integration.conftest import Processes, consume, wait_ready

pytestmark = pytest.mark.integration

CADDYFILE = Path(__file__).parents[2] / "deploy" / "Caddyfile"
PROXY_ADDRESS = "127.0.0.1"
CLIENT_ADDRESS = "127.0.0.3"
DIRECT_ADDRESS = "127.0.0.2"
FORGED = {"X-Forwarded-For": "6.6.6.6"}


@pytest.fixture
def ingress_port(processes: Processes) -> int:
    processes.settings = processes.settings.model_copy(update={"trusted_proxies": [PROXY_ADDRESS]})
    processes.start("ingest")
    return processes.settings.http_port


@pytest.fixture
def proxy(ingress_port: int, tmp_path: Path) -> Iterator[str]:
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


async def wait_proxy(base: str) -> None:
    for _ in range(100):
        try:
            await get_from(CLIENT_ADDRESS, f"{base}/")
            return
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    pytest.fail("caddy did not start (see caddy.log)")


async def test_the_proxy_forwards_only_callbacks(
    processes: Processes, ingress_port: int, proxy: str
) -> None:
    await wait_ready(f"http://127.0.0.1:{ingress_port}/readyz")
    await wait_proxy(proxy)
    query = "msisdn=33612345678&to=33756781234&messageId=0200000001&text=Oui&type=text"
    status, headers = await get_from(CLIENT_ADDRESS, f"{proxy}/callbacks/smspartner?{query}")
    assert status == 200
    assert "Server" not in headers
    for path in ("/api/replies", "/healthz", "/readyz", "/metrics", "/dashboard/", "/"):
        status, _ = await get_from(CLIENT_ADDRESS, f"{proxy}{path}")
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
