"""The dashboard in a real headless Chromium (Debian's, driven by playwright; no browser download).

Install: ``apt-get install -y chromium`` and the ``playwright`` Python package.
The page is served by the real API app over a socket, on the sample store, with
an API token: the page asks for it once (and keeps it across reloads); the test
reads the figures the page puts in the DOM, checks the auto-refresh picks up a
new reply, and saves ``test-artifacts/dashboard.png``. A second test plays the
attacker: a page of another site, and a host name rebound to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from sms_replies.analytics.api import create_api_app
from sms_replies.analytics.campaigns import Campaign, declare_campaign
from sms_replies.analytics.guard import ApiAccess
from sms_replies.errors import SinkWriteError
from sms_replies.sinks.duckdb import DuckDBSink
from tests.analytics_sample import SAMPLE_REPLIES, write_sample_async

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
TOKEN = "dashboard-browser-test-token"


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
    server = TestServer(create_api_app(db, access=ApiAccess(token=SecretStr(TOKEN))))
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
                # No token yet: the API answers 401 and the page asks for it.
                await page.wait_for_selector('[data-testid="status"][data-state="auth"]')
                await page.fill('[data-testid="token-input"]', "not-the-token")
                await page.click('[data-testid="token-submit"]')
                await page.wait_for_selector('[data-testid="auth-message"]:has-text("refused")')
                await page.fill('[data-testid="token-input"]', TOKEN)
                await page.click('[data-testid="token-submit"]')
                await page.wait_for_selector('[data-testid="status"][data-state="ok"]')
                assert await page.locator('[data-testid="auth"]').is_hidden()
                # Asked once: a reload uses the kept token.
                await page.reload()
                await page.wait_for_selector('[data-testid="status"][data-state="ok"]')
                assert await page.locator('[data-testid="auth"]').is_hidden()

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
    # The browser logs each 401 it met as a console error; nothing else may fail.
    assert [e for e in errors if "401" not in e] == []


async def test_times_are_24_hour_in_the_query_zone_and_count_ticks_whole(tmp_path: Path) -> None:
    """Issue 13 item 6: a browser in New York, en-US (12-hour), reading a Tokyo query.

    Every time on the page is the query's zone in 24-hour form: the range, the status
    line's "updated", the x-axis ticks and the cursor's time; count axes tick at whole
    numbers (one or two replies an hour here: a plain axis would tick at 0.5).
    """
    from playwright.async_api import async_playwright

    db = tmp_path / "replies.duckdb"
    await write_sample_async(db)
    server = TestServer(create_api_app(db))
    await server.start_server()
    errors: list[str] = []
    zone = ZoneInfo("Asia/Tokyo")  # UTC+9, neither the API's default zone nor the browser's
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            try:
                context = await browser.new_context(
                    timezone_id="America/New_York",
                    locale="en-US",
                    viewport={"width": 1280, "height": 1400},
                )
                page = await context.new_page()
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                url = "/dashboard/?since=2025-03-29&until=2025-03-31&tz=Asia/Tokyo&refresh=0"
                await page.goto(str(server.make_url(url)))
                await page.wait_for_selector('[data-testid="status"][data-state="ok"]')

                async def text(testid: str) -> str:
                    return (await page.locator(f'[data-testid="{testid}"]').inner_text()).strip()

                assert await text("range") == "2025-03-29 00:00 → 2025-03-31 00:00 (Asia/Tokyo)"
                updated = await text("last-updated")
                assert re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]", updated), updated
                shown = datetime.combine(datetime.now(zone).date(), time.fromisoformat(updated))
                drift = abs((datetime.now(zone).replace(tzinfo=None) - shown).total_seconds())
                assert drift < 60 or drift > 86_400 - 60, f"{updated} is not Tokyo's time"

                for chart in ("chart-replies", "chart-stop-share", "chart-health"):
                    box = page.locator(f'[data-testid="{chart}"]')
                    ticks = json.loads(await box.get_attribute("data-x-ticks") or "[]")
                    assert ticks, chart
                    # The range starts at midnight in Tokyo: the first tick is that midnight.
                    assert ticks[0] == "00:00\n2025-03-29", (chart, ticks)
                    for tick in ticks:
                        assert re.fullmatch(
                            r"([01][0-9]|2[0-3]):[0-5][0-9](\n2025-03-(29|30))?", tick
                        ), (chart, tick)
                for chart in ("chart-replies", "chart-health"):
                    box = page.locator(f'[data-testid="{chart}"]')
                    counts = json.loads(await box.get_attribute("data-y-ticks") or "[]")
                    assert counts, chart
                    assert counts[0] == "0", (chart, counts)
                    assert all(re.fullmatch(r"[0-9]+", c) for c in counts), (chart, counts)
                    assert len(set(counts)) == len(counts), (chart, counts)

                # The cursor's time in the legend: hover the replies chart.
                canvas = page.locator('[data-testid="chart-replies"] .u-over')
                area = await canvas.bounding_box()
                assert area is not None
                await page.mouse.move(area["x"] + area["width"] / 2, area["y"] + 20)
                legend_time = page.locator(
                    '[data-testid="chart-replies"] .u-legend .u-series:first-child .u-value'
                )
                hovered = (await legend_time.inner_text()).strip()
                assert re.fullmatch(r"2025-03-(29|30) ([01][0-9]|2[0-3]):00", hovered), hovered
            finally:
                await browser.close()
    finally:
        await server.close()
    assert errors == []


async def _write(db: Path, reply: object) -> None:
    """Write with the sink, retrying while the page's reads hold the file."""
    sink = DuckDBSink(db, serve=False)  # the sink keeps its file open: close it after
    try:
        for _ in range(100):
            try:
                await sink.write([reply])  # type: ignore[list-item]
                return
            except SinkWriteError:
                await asyncio.sleep(0.05)
            except Exception as exc:  # duckdb's in-process lock conflict, not converted
                if "different configuration" not in str(exc):
                    raise
                await asyncio.sleep(0.05)
        raise AssertionError("could not write the late reply")
    finally:
        await sink.close()


EVIL_PAGE = """<!doctype html><title>cheap flights</title><script>
const api = "%(api)s";
const campaign = JSON.stringify(
  {name: "evil", short_number: true, start: "2025-03-29", end: "2025-03-30"});
Promise.allSettled([
  // A "simple" request: no preflight, sent with the analyst's browser as it is.
  fetch(api + "/api/campaigns", {method: "POST", mode: "no-cors", body: campaign,
                                headers: {"Content-Type": "text/plain"}}),
  fetch(api + "/api/replies", {mode: "no-cors"}),
]).then(() => { document.title = "done"; });
</script>"""


async def test_pages_of_other_sites_get_nothing(tmp_path: Path) -> None:
    """Default deployment (loopback, no token): reads are open to local clients, so the
    browser path is what Host and Origin checks guard."""
    from playwright.async_api import async_playwright

    db = tmp_path / "replies.duckdb"
    await write_sample_async(db)
    seen: list[tuple[str, str, int]] = []
    api_app = create_api_app(db)

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        seen.append((request.method, request.path, response.status))

    api_app.on_response_prepare.append(record)
    api = TestServer(api_app, host="127.0.0.1")
    await api.start_server()
    evil_app = web.Application()
    api_origin = f"http://127.0.0.1:{api.port}"

    async def evil(request: web.Request) -> web.Response:
        return web.Response(text=EVIL_PAGE % {"api": api_origin}, content_type="text/html")

    evil_app.router.add_get("/", evil)
    evil_server = TestServer(evil_app, host="127.0.0.1")
    await evil_server.start_server()
    try:
        async with async_playwright() as pw:
            # rebound.test resolves to 127.0.0.1, as an attacker's DNS would make it.
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=[*FLAGS, "--host-resolver-rules=MAP *.test 127.0.0.1"],
            )
            try:
                page = await browser.new_page()
                # 1. A page of another site (another origin: localhost, not 127.0.0.1).
                await page.goto(f"http://localhost:{evil_server.port}/")
                await page.wait_for_function("document.title === 'done'")
                # 2. DNS rebinding: the attacker's name now points at the API.
                rebound = await page.goto(f"http://rebound.test:{api.port}/api/replies")
                assert rebound is not None
                assert rebound.status == 403
                assert "forbidden_host" in await rebound.text()
                assert "+33" not in await rebound.text()
            finally:
                await browser.close()
    finally:
        await evil_server.close()
        await api.close()
    assert ("POST", "/api/campaigns", 403) in seen
    assert ("GET", "/api/replies", 403) in seen
    assert not [s for s in seen if s[2] < 400]
    declared = await asyncio.to_thread(_campaign_names, db)
    assert declared == []


def _campaign_names(db: Path) -> list[str]:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        if "campaigns" not in tables:
            return []
        return [r[0] for r in con.execute("SELECT name FROM campaigns").fetchall()]
