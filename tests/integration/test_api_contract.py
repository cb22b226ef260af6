"""The analytics API and the callback endpoint against their OpenAPI documents, checked by
schemathesis with every check: real processes (``sms-replies api`` over a DuckDB store
written by the real sink; ``sms-replies ingest`` with the embedded broker), a fixed seed,
few examples. The full runs are ``make contract`` (figures in docs/security.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from sms_replies.broker.embedded import free_port
from tests.analytics_sample import write_sample_async
from tests.contract.schemathesis_run import CALLBACKS_CONFIG, run_st
from tests.integration.conftest import Processes

pytestmark = pytest.mark.integration

API_TOKEN = "contract-test-api-token-0123456789"
CALLBACK_TOKEN = "contract-test-callback-token-0123"


async def wait_for(url: str, headers: dict[str, str], timeout: float = 30) -> None:
    async with aiohttp.ClientSession(headers=headers) as session:
        for _ in range(int(timeout * 10)):
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


@pytest.mark.timeout(300)
async def test_analytics_api_keeps_its_openapi_contract(
    processes: Processes, tmp_path: Path
) -> None:
    await write_sample_async(processes.settings.duckdb_path)
    port = free_port()
    processes.start("api", SMS_REPLIES_API_PORT=str(port), SMS_REPLIES_API_TOKEN=API_TOKEN)
    auth = f"Authorization: Bearer {API_TOKEN}"
    schema = f"http://127.0.0.1:{port}/api/openapi.json"
    await wait_for(schema, {"Authorization": f"Bearer {API_TOKEN}"})
    # Short form: the coverage phase's invalid cases (boundaries, wrong types, missing
    # and unknown values, undeclared methods) and random valid and invalid cases of
    # every operation, writes included. The full run (make contract) adds the
    # coverage phase's valid cases (every zone of the enum...) and more examples.
    coverage = await asyncio.to_thread(
        run_st, schema, "-H", auth, "--phases", "coverage", "--mode", "negative", timeout=240
    )
    assert coverage.clean, coverage.output
    fuzzing = await asyncio.to_thread(
        run_st, schema, "-H", auth, "--phases", "fuzzing", "--max-examples", "20", timeout=240
    )
    assert fuzzing.clean, fuzzing.output
    assert coverage.operations == fuzzing.operations == 10  # /api/optouts: the 10th
    assert coverage.generated + fuzzing.generated >= 400, (coverage.output, fuzzing.output)
    assert "api" in processes.children  # the server lived through it
    assert processes.children["api"].poll() is None, processes.log("api")


@pytest.mark.timeout(300)
async def test_callback_endpoint_keeps_its_openapi_contract(processes: Processes) -> None:
    processes.start("ingest", SMS_REPLIES_CALLBACK_TOKEN=CALLBACK_TOKEN)
    base = f"http://{processes.settings.http_host}:{processes.settings.http_port}"
    await wait_for(f"{base}/readyz", {})
    # Short form: the coverage phase and random cases of both operations (GET query;
    # urlencoded, multipart and JSON bodies), with the token; the real broker behind.
    result = await asyncio.to_thread(
        run_st,
        f"{base}/openapi.json",
        "--max-examples",
        "15",
        config=CALLBACKS_CONFIG,
        env={"SMS_REPLIES_CALLBACK_TOKEN": CALLBACK_TOKEN},
        timeout=240,
    )
    assert result.clean, result.output
    assert result.operations == 2
    assert result.generated >= 200, result.output
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as answer:
        metrics = await answer.text()
    accepted = [
        line
        for line in metrics.splitlines()
        if line.startswith('sms_replies_callbacks_total{outcome="accepted"}')
    ]
    assert accepted, metrics  # some generated callbacks went all the way to the broker
    assert float(accepted[0].split()[-1]) > 0
    assert processes.children["ingest"].poll() is None, processes.log("ingest")
