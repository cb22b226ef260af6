"""The dashboard in a real headless Chromium (Debian's, driven by playwright; no browser download).

Install: ``apt-get install -y chromium`` and the ``playwright`` Python package.
The page is served by the real API app over a socket, on the sample store; the
test reads the figures the page puts in the DOM, checks the auto-refresh picks
up a new reply, and saves ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from sms_replies.analytics.api import create_api_app
from sms_replies.analytics.campaigns import Campaign, declare_campaign
from sms_replies.analytics.sample import SAMPLE_REPLIES, write_sample_async
from sms_replies.errors import SinkWriteError
from sms_replies.sinks.duckdb import DuckDBSink

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(),
        reason="/usr/bin/chromium is absent: apt-get install -y chromium",
    ),
]

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


async def test_dashboard_shows_the_figures(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    db = tmp_path / "replies.duckdb"
    await write_sample_async(db)
    declare_campaign(
        db,
        Campaign.create(
            "spring-A",
            recipient="+33700000001",
            start=datetime.fromisoformat("2025-03-29T00:00+01:00"),
            end=datetime.fromisoformat("2025-03-30T12:00+02:00"),
            delivered=100,
        ),
    )
    server = TestServer(create_api_app(db))
    await server.start_server()
    errors: list[str] = []
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=FLAGS,
                viewport={"width": 1280, "height": 1400},
            )
            try:
                page = await context.new_page()
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                url = server.make_url("/dashboard/?since=2025-03-29&until=2025-03-31&refresh=1")
                await page.goto(str(url))
                await page.wait_for_selector('[data-testid="status"][data-state="ok"]')

                async def text(testid: str) -> str:
                    return (await page.locator(f'[data-testid="{testid}"]').inner_text()).strip()

                assert await text("summary-replies") == "8"
                assert await text("summary-senders") == "6"
                assert await text("summary-stops") == "2"
                assert await text("summary-stop-share") == "25.0%"
                assert await text("summary-multipart-share") == "25.0%"
                assert await text("summary-incomplete-share") == "12.5%"
                # Long replies r3 (4.2 s) and r4 (11.8 s): median 8 s.
                assert await text("summary-median-assembly") == "8.0"
                rows = page.locator('[data-testid="keyword-row"]')
                keywords = [
                    (
                        await rows.nth(i).get_attribute("data-keyword"),
                        (await rows.nth(i).locator('[data-testid="keyword-count"]').inner_text()),
                    )
                    for i in range(await rows.count())
                ]
                assert keywords == [("OUI", "3"), ("STOP", "2"), ("INFO", "1"), ("NON", "1")]
                campaign = page.locator('[data-testid="campaign-row"][data-campaign="spring-A"]')
                assert (
                    await campaign.locator('[data-testid="campaign-replies"]').inner_text() == "4"
                )
                rate = campaign.locator('[data-testid="campaign-reply-rate"]')
                assert await rate.inner_text() == "2.0%"
                opt_out = campaign.locator('[data-testid="campaign-opt-out-rate"]')
                assert await opt_out.inner_text() == "1.0%"
                # 47 hourly buckets: 2 Paris days, one of them 23 hours long.
                for chart in ("chart-replies", "chart-stop-share", "chart-health"):
                    box = page.locator(f'[data-testid="{chart}"]')
                    assert await box.get_attribute("data-points") == "47"
                    assert await box.locator("canvas").count() == 1
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

                # A new reply arrives; the page refreshes itself (every second here).
                late = dataclasses.replace(
                    SAMPLE_REPLIES[6], reply_id="r10", provider_message_ids=("r10-p1",)
                )
                await _write(db, late)
                for _ in range(150):  # the page's CSP forbids eval: poll from here
                    if await text("summary-replies") == "9":
                        break
                    await asyncio.sleep(0.1)
                assert await text("summary-replies") == "9"
            finally:
                await context.close()
    finally:
        await server.close()
    assert errors == []


async def _write(db: Path, reply: object) -> None:
    """Write with the sink, retrying while the page's reads hold the file."""
    sink = DuckDBSink(db)
    for _ in range(100):
        try:
            await sink.write([reply])  # type: ignore[list-item]
            return
        except SinkWriteError:
            await asyncio.sleep(0.05)
        except Exception as exc:  # duckdb's in-process lock conflict is not converted by the sink
            if "different configuration" not in str(exc):
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("could not write the late reply")
