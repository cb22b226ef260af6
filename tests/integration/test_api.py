"""The analytics API over a real socket (aiohttp TestServer), on the sample store."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from pydantic import SecretStr

from sms_replies.analytics.api import ROUTES, create_api_app
from sms_replies.analytics.cli import stats_command
from sms_replies.analytics.guard import ApiAccess
from tests.analytics_sample import NUMBER_A, write_sample_async

pytestmark = pytest.mark.integration

RANGE = {"since": "2025-03-29", "until": "2025-03-31"}
TOKEN = "integration-test-api-token"


@pytest.fixture
async def data_dir(tmp_path: Path) -> Path:
    await write_sample_async(tmp_path / "replies.duckdb")
    return tmp_path


@pytest.fixture
async def client(data_dir: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = create_api_app(data_dir / "replies.duckdb", access=ApiAccess(token=SecretStr(TOKEN)))
    async with TestClient(TestServer(app), headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


async def get_json(c: TestClient[web.Request, web.Application], path: str, **params: Any) -> Any:
    r = await c.get(path, params=params)
    assert r.status == 200, await r.text()
    return await r.json()


async def test_openapi_documents_every_route(
    client: TestClient[web.Request, web.Application],
) -> None:
    doc = await get_json(client, "/api/openapi.json")
    assert doc["openapi"].startswith("3.1")
    routes = set()
    for route in client.app.router.routes():
        if route.method == "HEAD":  # added by aiohttp beside each static GET
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info["prefix"] + "/{filename}"
        routes.add((route.method.lower(), path))
        assert path in doc["paths"], f"{route.method} {path} undocumented"
        assert route.method.lower() in doc["paths"][path], f"{route.method} {path} undocumented"
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == routes
    for route_doc in ROUTES:
        op = doc["paths"][route_doc.path][route_doc.method.lower()]
        if route_doc.params is not None:
            names = {p["name"] for p in op["parameters"] if p["in"] == "query"}
            assert names == set(route_doc.params.model_fields)
        if route_doc.body is not None:
            assert op["requestBody"]["content"]["application/json"]["schema"]


async def test_summary_matches_hand_counts(
    client: TestClient[web.Request, web.Application],
) -> None:
    s = await get_json(client, "/api/summary", **RANGE, group_by="channel")
    assert s["start"] == "2025-03-29T00:00:00+01:00"
    assert s["end"] == "2025-03-31T00:00:00+02:00"
    t = s["totals"]
    assert (t["replies"], t["senders"], t["stops"], t["multipart"], t["incomplete"]) == (
        8,
        6,
        2,
        2,
        1,
    )
    assert (t["stop_share"], t["multipart_share"], t["incomplete_share"]) == (0.25, 0.25, 0.125)
    assert t["median_assembly_seconds"] == pytest.approx(
        8.0
    )  # long replies r3 (4.2 s) and r4 (11.8 s)
    assert s["median_assembly_available"] is True
    assert [
        (g["key"], g["stats"]["replies"], g["stats"]["median_assembly_seconds"])
        for g in s["groups"]
    ] == [
        ("long_number", 6, pytest.approx(8.0)),
        ("short_number", 2, None),  # no long reply on the short number
    ]
    assert [(k["keyword"], k["replies"]) for k in s["keywords"]] == [
        ("OUI", 3),
        ("STOP", 2),
        ("INFO", 1),
        ("NON", 1),
    ]


async def test_cli_json_equals_api(
    client: TestClient[web.Request, web.Application], data_dir: Path
) -> None:
    api = await get_json(client, "/api/summary", **RANGE, group_by="recipient")
    result = CliRunner().invoke(
        stats_command,
        [
            "--data-dir",
            str(data_dir),
            "--since",
            RANGE["since"],
            "--until",
            RANGE["until"],
            "--group-by",
            "recipient",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    cli = json.loads(result.output)
    assert cli == api


async def test_timeseries_and_keywords(client: TestClient[web.Request, web.Application]) -> None:
    ts = await get_json(client, "/api/timeseries", **RANGE, bucket="day")
    assert ts["buckets"] == ["2025-03-29T00:00:00+01:00", "2025-03-30T00:00:00+01:00"]
    assert [p["replies"] for p in ts["series"][0]["points"]] == [1, 7]
    utc = await get_json(client, "/api/timeseries", **RANGE, bucket="day", tz="UTC")
    assert utc["buckets"][0] == "2025-03-29T00:00:00+00:00"
    kw = await get_json(client, "/api/keywords", **RANGE, limit="1")
    assert kw["keywords"] == [{"keyword": "OUI", "replies": 3, "share": 0.375}]


async def test_campaigns_declare_and_list(client: TestClient[web.Request, web.Application]) -> None:
    body = {
        "name": "spring-A",
        "recipient": "0700000001",
        "start": "2025-03-29",
        "end": "2025-03-30T12:00",
        "delivered": 100,
    }
    r = await client.post("/api/campaigns", json=body)
    assert r.status == 201, await r.text()
    created = (await r.json())["campaign"]
    assert created["recipient"] == NUMBER_A
    assert created["end"] == "2025-03-30T12:00:00+02:00"
    r = await client.post("/api/campaigns", json=body)
    assert r.status == 409
    (item,) = (await get_json(client, "/api/campaigns"))["campaigns"]
    assert (item["stats"]["replies"], item["reply_rate"], item["opt_out_rate"]) == (4, 0.02, 0.01)
    s = await get_json(client, "/api/summary", **RANGE, campaign="spring-A")
    assert s["totals"]["replies"] == 4
    r = await client.get("/api/summary", params={**RANGE, "campaign": "nope"})
    assert r.status == 404
    assert (await r.json())["parameter"] == "campaign"


async def test_replies_paging_and_filters(
    client: TestClient[web.Request, web.Application],
) -> None:
    seen: list[str] = []
    params: dict[str, str] = {"limit": "4"}
    while True:
        page = await get_json(client, "/api/replies", **params)
        seen += [r["reply_id"] for r in page["items"]]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == ["r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1", "r9"]
    # '+' sent unencoded arrives as a space; both forms work.
    raw = await client.get("/api/replies?sender=+33600000001")
    assert [r["reply_id"] for r in (await raw.json())["items"]] == ["r3", "r1"]
    stops = await get_json(client, "/api/replies", is_stop="true", keyword="stop")
    assert [r["reply_id"] for r in stops["items"]] == ["r5", "r2"]
    assert stops["items"][1]["received_at"] == "2025-03-30T00:10:00+01:00"
    offset = await get_json(client, "/api/replies", offset="8", limit="5")
    assert [r["reply_id"] for r in offset["items"]] == ["r9"]
    # A recipient in any format, as a sender: the one normalisation (sms_replies.phone).
    by_recipient = {
        form: [
            r["reply_id"] for r in (await get_json(client, "/api/replies", recipient=form))["items"]
        ]
        for form in ("+33700000002", "33700000002", "0700000002", "07 00 00 00 02")
    }
    assert set(map(tuple, by_recipient.values())) == {("r8", "r4")}
    # The sender likewise, national form included (as the CLI's --phone normalises it).
    by_sender = {
        form: [
            r["reply_id"] for r in (await get_json(client, "/api/replies", sender=form))["items"]
        ]
        for form in ("+33600000001", "33600000001", "0600000001", "06 00 00 00 01")
    }
    assert set(map(tuple, by_sender.values())) == {("r3", "r1")}


@pytest.mark.parametrize(
    ("path", "query", "parameter"),
    [
        ("/api/summary", "since=someday", "since"),
        ("/api/summary", "since=", "since"),
        ("/api/summary", "since=%207d", "since"),
        ("/api/summary", "until=2025-13-01", "until"),
        ("/api/summary", "until=2025-02-29", "until"),
        ("/api/summary", "until=1899-12-31", "until"),
        ("/api/summary", "since=99999w", "since"),
        ("/api/summary", "tz=Mars/Olympus", "tz"),
        ("/api/summary", "tz=", "tz"),
        ("/api/summary", "campaign=%20", "campaign"),
        ("/api/summary", "group_by=sender", "group_by"),
        ("/api/summary", "top=0", "top"),
        ("/api/summary", "colour=red", "colour"),
        ("/api/summary", "since=7d&since=1d", "since"),
        ("/api/timeseries", "bucket=week", "bucket"),
        ("/api/keywords", "limit=abc", "limit"),
        ("/api/campaigns", "tz=nowhere", "tz"),
        ("/api/replies", "limit=1001", "limit"),
        ("/api/replies", "offset=-1", "offset"),
        ("/api/replies", "offset=1&cursor=abc", "cursor"),
        ("/api/replies", "cursor=%%%", "cursor"),
        ("/api/replies", "cursor=01.r1", "cursor"),
        ("/api/replies", "is_stop=maybe", "is_stop"),
        ("/api/replies", "is_stop=yes", "is_stop"),
        ("/api/replies", "complete=2", "complete"),
    ],
)
async def test_bad_parameters(
    client: TestClient[web.Request, web.Application], path: str, query: str, parameter: str
) -> None:
    r = await client.get(f"{path}?{query}")
    assert r.status == 400
    body = await r.json()
    assert body["error"] == "invalid_parameter"
    assert body["parameter"] == parameter
    assert body["message"]
    assert "Traceback" not in await r.text()


@pytest.mark.parametrize(
    ("payload", "parameter"),
    [
        ("not json", "body"),
        ("[1]", "body"),
        ('{"name": "x", "start": "2025-01-01", "end": "2025-01-02"}', "recipient"),
        (
            '{"name": "x", "recipient": "abc", "start": "2025-01-01", "end": "2025-01-02"}',
            "recipient",
        ),
        (
            '{"name": "x", "recipient": "+447700900123", "start": "2025-01-01", '
            '"end": "2025-01-02"}',
            "recipient",
        ),
        (
            '{"name": "x", "recipient": "0612345678", "short_number": true, '
            '"start": "2025-01-01", "end": "2025-01-02"}',
            "recipient",
        ),
        ('{"name": " ", "short_number": true, "start": "2025-01-01", "end": "2025-01-02"}', "name"),
        ('{"name": "x", "short_number": true, "start": "", "end": "2025-01-02"}', "start"),
        (
            '{"name": "x", "short_number": true, "start": "2025-01-01", "end": "2025-01-02", '
            '"replace": "yes"}',
            "replace",
        ),
        (
            '{"name": "x", "short_number": true, "start": "2025-01-01", "end": "2025-01-02", '
            '"delivered": "5"}',
            "delivered",
        ),
        ('{"name": "x", "short_number": true, "start": "x", "end": "2025-01-01"}', "start"),
        ('{"name": "", "short_number": true, "start": "2025-01-01", "end": "2025-01-02"}', "name"),
        ('{"short_number": true, "start": "2025-01-01", "end": "2025-01-02"}', "name"),
        (
            '{"name": "x", "short_number": true, "start": "2025-01-01", "end": "2025-01-02", '
            '"delivered": -5}',
            "delivered",
        ),
        (
            '{"name": "x", "short_number": true, "start": "2025-01-01", "end": "2025-01-02", '
            '"extra": 1}',
            "extra",
        ),
    ],
)
async def test_bad_campaign_bodies(
    client: TestClient[web.Request, web.Application], payload: str, parameter: str
) -> None:
    r = await client.post(
        "/api/campaigns", data=payload, headers={"Content-Type": "application/json"}
    )
    assert r.status == 400, await r.text()
    assert (await r.json())["parameter"] == parameter


REPLY_ENDPOINTS = ("/api/summary", "/api/timeseries", "/api/keywords", "/api/replies")


async def test_missing_store_is_503_not_zeros(tmp_path: Path) -> None:
    # A mistyped store answered all zeros with 200, which a dashboard shows as "no replies".
    app = create_api_app(tmp_path / "nothing" / "replies.duckdb")
    async with TestClient(TestServer(app)) as c:
        for path in REPLY_ENDPOINTS:
            r = await c.get(path)
            assert r.status == 503, path
            body = await r.json()
            assert body["error"] == "store_missing", path
            assert "does not exist" in body["message"]
        # No campaign is declared in a store that does not exist: a true empty list.
        assert (await get_json(c, "/api/campaigns"))["campaigns"] == []


async def test_store_without_replies_table_is_503(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    duckdb.connect(str(path)).close()  # a DuckDB file of something else
    async with TestClient(TestServer(create_api_app(path))) as c:
        for endpoint in REPLY_ENDPOINTS:
            r = await c.get(endpoint)
            assert r.status == 503, endpoint
            assert "holds no replies table" in (await r.json())["message"]


async def test_replies_of_one_campaign(client: TestClient[web.Request, web.Application]) -> None:
    body = {"name": "spring-A", "recipient": NUMBER_A, "start": "2025-03-29"}
    r = await client.post("/api/campaigns", json={**body, "end": "2025-03-30T12:00"})
    assert r.status == 201, await r.text()
    page = await get_json(client, "/api/replies", campaign="spring-A", limit="100")
    # The same membership as the campaign's own figures (4 replies in its window).
    (item,) = (await get_json(client, "/api/campaigns"))["campaigns"]
    assert len(page["items"]) == item["stats"]["replies"] == 4
    assert {row["recipient"] for row in page["items"]} == {NUMBER_A}
    everything = await get_json(client, "/api/replies", limit="100")
    assert len(everything["items"]) > len(page["items"])
    r = await client.get("/api/replies", params={"campaign": "nope"})
    assert r.status == 404
    assert (await r.json())["parameter"] == "campaign"


async def test_busy_store_answers_503(data_dir: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, duckdb; c = duckdb.connect(sys.argv[1]); print('ok', flush=True);"
            " time.sleep(3)",
            str(data_dir / "replies.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ok"
        app = create_api_app(data_dir / "replies.duckdb", store_timeout=0.1)
        async with TestClient(TestServer(app)) as c:
            r = await c.get("/api/summary")
            assert r.status == 503
            assert r.headers["Retry-After"] == "1"
            assert (await r.json())["error"] == "store_busy"
    finally:
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()


async def test_dashboard_is_served_from_the_package(
    client: TestClient[web.Request, web.Application],
) -> None:
    r = await client.get("/dashboard", allow_redirects=False)
    assert r.status == 302
    assert r.headers["Location"].endswith("/dashboard/")
    r = await client.get("/dashboard/")
    assert r.status == 200
    html = await r.text()
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert "http://" not in html
    assert "https://" not in html
    for asset in ("app.js", "style.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"):
        assert f"static/{asset}" in html
        r = await client.get(f"/dashboard/static/{asset}")
        assert r.status == 200, asset


# What the OpenAPI document allows but cannot relate (since/until, cursor/offset,
# start/end): accepted, with a defined meaning. Each was a 400 before (issue 16).


async def test_reversed_range_is_empty(client: TestClient[web.Request, web.Application]) -> None:
    s = await get_json(client, "/api/summary", since="2025-03-31", until="2025-03-29")
    assert s["totals"]["replies"] == 0
    assert s["start"] == s["end"] == "2025-03-29T00:00:00+01:00"
    ts = await get_json(client, "/api/timeseries", since="2025-03-31", until="2025-03-29")
    assert ts["buckets"] == []
    page = await get_json(client, "/api/replies", since="2025-03-31", until="2025-03-29")
    assert page["items"] == []


async def test_long_hourly_range_keeps_its_last_buckets(
    client: TestClient[web.Request, web.Application],
) -> None:
    ts = await get_json(client, "/api/timeseries", since="1900-01-01", until="2025-03-31", tz="UTC")
    assert len(ts["buckets"]) == 10_000
    assert ts["start"] == "2024-02-08T08:00:00+00:00"  # 10,000 hours before the end
    assert ts["buckets"][-1] == "2025-03-30T23:00:00+00:00"
    assert sum(p["replies"] for p in ts["series"][0]["points"]) == 9  # every sample reply


async def test_cursor_and_offset_together(
    client: TestClient[web.Request, web.Application],
) -> None:
    first = await get_json(client, "/api/replies", limit="2")
    assert [r["reply_id"] for r in first["items"]] == ["r8", "r7"]
    after = await get_json(client, "/api/replies", limit="2", cursor=first["next_cursor"])
    assert [r["reply_id"] for r in after["items"]] == ["r6", "r5"]
    skipped = await get_json(
        client, "/api/replies", limit="2", cursor=first["next_cursor"], offset="1"
    )
    assert [r["reply_id"] for r in skipped["items"]] == ["r5", "r4"]


async def test_campaign_window_in_the_wrong_order_is_422(
    client: TestClient[web.Request, web.Application],
) -> None:
    # Schema-valid (no JSON schema can compare two fields), so not a 400.
    for start, end in (("2025-03-30", "2025-03-29"), ("7d", "7d")):
        body = {"name": "typo", "short_number": True, "start": start, "end": end}
        r = await client.post("/api/campaigns", json=body)
        assert r.status == 422, await r.text()
        assert (await r.json())["error"] == "empty_window"
    assert (await get_json(client, "/api/campaigns"))["campaigns"] == []


async def test_undeclared_methods_get_405_with_allow(
    client: TestClient[web.Request, web.Application],
) -> None:
    for path in ("/api/campaigns", "/api/summary", "/dashboard/", "/dashboard/static/app.js"):
        r = await client.request("TRACE", path)
        assert r.status == 405, path
        assert "GET" in r.headers["Allow"], path
        assert (await r.json())["error"] == "method_not_allowed"


async def test_missing_dashboard_file_is_a_json_404(
    client: TestClient[web.Request, web.Application],
) -> None:
    for name in ("nope.js", "../api.py", "vendor"):
        r = await client.get(f"/dashboard/static/{name}")
        assert r.status == 404, name
        assert (await r.json())["error"] == "not_found"
