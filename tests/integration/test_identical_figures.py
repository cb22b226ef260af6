"""The same replies give the same figures from DuckDB, PostgreSQL and ClickHouse (issue 13).

One data set of every shape (long and short number, STOPs by text and by the
provider, long replies complete and incomplete, one stored with a single part,
replies through a campaign's callback URL and replies matched by a declared
campaign's window, several days across both 2025 DST changes of Europe/Paris)
is written through the real sinks (``DuckDBSink``, ``PostgresSink``,
``ClickHouseSink``) into a DuckDB file, PostgreSQL at 127.0.0.1:5432 (a schema of
its own) and Debian's clickhouse-server 18.16. Then the real CLI
(``sms-replies stats --format json --store URL``, with buckets, groups and
campaign filters, and ``campaign list --format json``) must print the same JSON
for the three stores.

Timestamps are whole seconds: ClickHouse 18.16 has no DateTime64 and stores
``DateTime`` (seconds), so a data set with milliseconds would differ there by
construction (``docs/analytics.md``). Range bounds with a fraction of a second
are part of the test: the ClickHouse reader rounds them up, which selects the
same whole-second rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from clickhouse_driver import Client
from pydantic import SecretStr

from sms_replies.analytics.api import create_api_app
from sms_replies.analytics.campaigns import Campaign, declare_campaign
from sms_replies.analytics.guard import ApiAccess
from sms_replies.analytics.queries import CLICKHOUSE_MASK_CAMPAIGNS
from sms_replies.cli import main
from sms_replies.optout import (
    DEFAULT_RESUBSCRIBE_KEYWORDS,
    decision_of,
    keyword_of,
    latest,
    stop_source,
)
from sms_replies.privacy import pseudonymize
from sms_replies.records import Reply
from sms_replies.sinks.clickhouse import ClickHouseSink
from sms_replies.sinks.duckdb import DuckDBSink
from sms_replies.sinks.postgres import PostgresSink
from sms_replies.stores.clickhouse import ClickHouseSettings
from sms_replies.stores.readers import ClickHouseReader, collapsed, open_store
from sms_replies.stores.url import StoreURL, parse_store_url
from tests.clickhouse_server import LocalServer, clickhouse_server_binary, local_clickhouse_server

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).parents[2]
NUMBER_A = "+33700000001"
NUMBER_B = "+33700000002"
SENDERS = [f"+336000000{n:02d}" for n in range(1, 13)]
OPT_IN, OPT_OUT, SHORT_STOP, HASHED = (f"+3361111110{n}" for n in range(1, 5))
KEY = b"a pseudonymisation key for tests"
TEXTS = ["Oui merci", "STOP", "non merci", "Arrêt svp", "INFO svp", "", "Stop!", "oui"]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _ms(t: datetime) -> int:
    return int(t.timestamp()) * 1000


def _reply(
    n: int,
    at: datetime,
    *,
    sender: str,
    recipient: str | None,
    text: str,
    parts: tuple[int, int] = (1, 1),
    assembly_s: int = 0,
    provider_stop: bool = False,
    campaign: str | None = None,
) -> Reply:
    received, expected = parts
    source = stop_source(text, "stop" if provider_stop else "text")
    return Reply(
        reply_id=f"same-{n:04d}",
        channel="long_number" if recipient else "short_number",
        sender=sender,
        recipient=recipient,
        text=text,
        keyword=keyword_of(text),
        is_stop=source is not None,
        stop_source=source,
        parts_expected=expected,
        parts_received=received,
        complete=received == expected,
        received_at_ms=_ms(at),
        provider_message_ids=tuple(f"same-{n}-p{i}" for i in range(1, received + 1)),
        last_part_at_ms=_ms(at) + assembly_s * 1000 if received > 1 else None,
        campaign=campaign,
        tag="t1" if campaign else None,
    )


def data_set() -> list[Reply]:
    """About 90 replies of every shape over 2025-03-27..04-01 and 2025-10-25..27 (UTC)."""
    rng = random.Random(13)
    replies: list[Reply] = []
    windows = [(utc("2025-03-27T20:00"), 5 * 86_400), (utc("2025-10-25T18:00"), 2 * 86_400)]
    for n in range(90):
        start, span = windows[n % 5 == 4]
        at = start + timedelta(seconds=rng.randrange(span))
        recipient = rng.choice([NUMBER_A, NUMBER_A, NUMBER_B, None])
        text = rng.choice(TEXTS)
        shape = rng.randrange(6)
        parts, assembly = (1, 1), 0
        if shape == 0:
            parts, assembly = (2, 2), rng.randrange(1, 40)
        elif shape == 1:
            parts, assembly = (2, 3), rng.randrange(1, 900)  # incomplete
        elif shape == 2 and n % 3 == 0:
            parts = (1, 3)  # incomplete, one part: no assembly time
            text = text + " " + "x" * 150
        campaign = None
        if n % 7 == 0:
            campaign = "spring-A"  # through spring-A's URL, whatever its time and number
        elif n % 11 == 0:
            campaign = "url-only"  # a campaign nobody declared
        replies.append(
            _reply(
                n,
                at,
                sender=rng.choice(SENDERS),
                recipient=recipient,
                text=text,
                parts=parts,
                assembly_s=assembly,
                provider_stop=recipient is None and n % 4 == 0,
                campaign=campaign,
            )
        )
    # Exactly on the local hours the DST changes skip and repeat, and on a fractional bound.
    replies.append(
        _reply(900, utc("2025-03-30T01:00:00"), sender=SENDERS[0], recipient=NUMBER_A, text="STOP")
    )
    replies.append(
        _reply(901, utc("2025-10-26T00:30:00"), sender=SENDERS[1], recipient=NUMBER_B, text="oui")
    )
    replies.append(
        _reply(
            902,
            utc("2025-10-26T01:30:00"),
            sender=SENDERS[1],
            recipient=NUMBER_B,
            text="oui encore",
        )
    )
    replies.append(
        _reply(903, utc("2025-03-29T09:00:00"), sender=SENDERS[2], recipient=NUMBER_A, text="Oui")
    )
    # The opt-out list: STOP then START then "Oui" from one number, a STOP from another,
    # a short-number stop, a pseudonymised sender's STOP; stored out of order (batches).
    a, b = NUMBER_A, NUMBER_B
    replies += [
        _reply(910, utc("2025-03-28T09:00"), sender=OPT_IN, recipient=a, text="START"),
        _reply(911, utc("2025-03-28T08:00"), sender=OPT_IN, recipient=a, text="STOP"),
        _reply(912, utc("2025-03-28T10:00"), sender=OPT_IN, recipient=a, text="Oui"),
        _reply(913, utc("2025-03-29T08:00"), sender=OPT_OUT, recipient=b, text="Stop svp"),
        _reply(
            914,
            utc("2025-03-30T08:00"),
            sender=SHORT_STOP,
            recipient=None,
            text="merci",
            provider_stop=True,
        ),
        _reply(
            915,
            utc("2025-03-31T08:00"),
            sender=pseudonymize(HASHED, KEY),
            recipient=a,
            text="STOP",
        ),
    ]
    return replies


CAMPAIGNS = [
    Campaign.create(
        "spring-A",
        recipient=NUMBER_A,
        start=utc("2025-03-28T23:00"),
        end=utc("2025-03-31T10:00"),
        delivered=400,
    ),
    Campaign.create(
        "short-B",
        short_number=True,
        start=utc("2025-03-29T12:00"),
        end=utc("2025-04-01T12:00"),
        delivered=250,
    ),
    Campaign.create(
        "autumn",
        recipient=NUMBER_B,
        start=utc("2025-10-25T22:00"),
        end=utc("2025-10-27T00:00"),
    ),
]

SPRING = ["--since", "2025-03-27", "--until", "2025-04-02"]
QUERIES: list[list[str]] = [
    [*SPRING, "--bucket", "hour"],
    [*SPRING, "--bucket", "day", "--group-by", "recipient"],
    [*SPRING, "--group-by", "campaign", "--top", "20"],
    [*SPRING, "--group-by", "channel", "--bucket", "hour"],
    [*SPRING, "--campaign", "spring-A", "--bucket", "hour"],
    [*SPRING, "--campaign", "url-only", "--bucket", "day"],
    [*SPRING, "--campaign", "short-B", "--group-by", "campaign"],
    [*SPRING, "--group-by", "campaign", "--bucket", "day", "--tz", "UTC"],
    ["--since", "2025-10-25", "--until", "2025-10-28", "--bucket", "hour", "--group-by", "channel"],
    # Fractional bounds: 10:00:00.5 Paris is after reply 903 (09:00:00 UTC).
    ["--since", "2025-03-29T10:00:00.5", "--until", "2025-03-31T08:15:30.25", "--bucket", "hour"],
]


# -- the three stores -----------------------------------------------------------------


@pytest.fixture(scope="module")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    if clickhouse_server_binary() is None:
        pytest.skip("clickhouse-server is not installed (`make test` installs it)")
    with local_clickhouse_server(tmp_path_factory.mktemp("clickhouse-figures")) as server:
        yield server


@dataclass(frozen=True)
class Stores:
    duckdb: str
    postgresql: str
    clickhouse: str
    pg_schema: str

    def urls(self) -> dict[str, str]:
        return {"duckdb": self.duckdb, "postgresql": self.postgresql, "clickhouse": self.clickhouse}


async def _write(sinks: list[Any], replies: list[Reply]) -> None:
    for sink in sinks:
        async with sink:
            # Two batches, the second repeating replies of the first (replay-safe).
            await sink.write(replies[:50])
            await sink.write(replies[40:])


@pytest.fixture(scope="module")
def stores(
    clickhouse_server: LocalServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stores]:
    name = f"query_figures_{uuid.uuid4().hex[:10]}"
    path = tmp_path_factory.mktemp("figures") / "replies.duckdb"
    ch = ClickHouseSettings(host=clickhouse_server.host, port=clickhouse_server.port, database=name)
    replies = data_set()
    sinks = [DuckDBSink(path, serve=False), PostgresSink(DSN, schema=name), ClickHouseSink(ch)]
    asyncio.run(_write(sinks, replies))
    result = Stores(
        duckdb=f"duckdb://{path}",
        postgresql=f"{DSN}?schema={name}",
        clickhouse=f"clickhouse://{clickhouse_server.host}:{clickhouse_server.port}/{name}",
        pg_schema=name,
    )
    for url in result.urls().values():
        store = parse_store_url(url, default_duckdb=path)
        for campaign in CAMPAIGNS:
            declare_campaign(store, campaign)
    try:
        yield result
    finally:
        asyncio.run(_drop_schema(name))
        client = Client(clickhouse_server.host, port=clickhouse_server.port)
        try:
            client.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            client.disconnect()


async def _drop_schema(name: str) -> None:
    con = await asyncpg.connect(DSN)
    try:
        await con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await con.close()


def real_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``sms-replies ARGS`` in a process of its own, as a user runs it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SMS_REPLIES_")}
    environment["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sms_replies", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The same command in this process (click's runner): the many comparisons stay fast.

    Real processes (:func:`real_cli`) run the summaries, the first query and the new user's.
    """
    result = CliRunner(env=env).invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def each_store(stores: Stores, run: Callable[[str], Any]) -> dict[str, Any]:
    return {backend: run(url) for backend, url in stores.urls().items()}


# -- the tests ---------------------------------------------------------------------------


def test_expected_totals_so_that_equal_means_something(stores: Stores) -> None:
    replies = data_set()
    spring = [r for r in replies if utc("2025-03-26T23:00") <= _at(r) < utc("2025-04-01T22:00")]
    summary = json_of(cli("stats", "--format", "json", "--store", stores.duckdb, *SPRING))
    totals = summary["totals"]
    assert totals["replies"] == len(spring) > 60
    assert totals["stops"] == sum(r.is_stop for r in spring) > 5
    assert totals["incomplete"] == sum(not r.complete for r in spring) > 5
    assert totals["senders"] == len({r.sender for r in spring})
    assert totals["median_assembly_seconds"] is not None


def _at(reply: Reply) -> datetime:
    return datetime.fromtimestamp(reply.received_at_ms / 1000, tz=UTC)


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: " ".join(q[4:]) or "range")
def test_stats_json_identical_in_the_three_stores(stores: Stores, query: list[str]) -> None:
    run = real_cli if query == QUERIES[0] else cli
    outputs = each_store(
        stores, lambda url: json_of(run("stats", "--format", "json", "--store", url, *query))
    )
    assert outputs["postgresql"] == outputs["duckdb"]
    assert outputs["clickhouse"] == outputs["duckdb"]
    assert outputs["duckdb"]["totals"]["replies"] > 0
    if "--bucket" in query and "--group-by" not in query:  # campaign groups may overlap
        points = [p for s in outputs["duckdb"]["timeseries"]["series"] for p in s["points"]]
        assert sum(p["replies"] for p in points) == outputs["duckdb"]["totals"]["replies"]


def test_campaign_figures_identical_in_the_three_stores(stores: Stores) -> None:
    def figures(url: str) -> Any:
        campaigns = json_of(cli("campaign", "list", "--format", "json", "--store", url))
        for item in campaigns["campaigns"]:
            del item["campaign"]["created_at"]  # when each store was given it
        return campaigns

    outputs = each_store(stores, figures)
    assert outputs["postgresql"] == outputs["duckdb"]
    assert outputs["clickhouse"] == outputs["duckdb"]
    by_name = {c["campaign"]["name"]: c for c in outputs["duckdb"]["campaigns"]}
    assert set(by_name) == {"spring-A", "short-B", "autumn"}
    assert by_name["spring-A"]["stats"]["replies"] > 0
    assert by_name["spring-A"]["reply_rate"] is not None


def test_the_three_summaries_side_by_side(stores: Stores) -> None:
    """What the closing note shows: one table per store, the same figures."""
    tables = each_store(stores, lambda url: real_cli("stats", "--store", url, *SPRING))
    for backend, result in tables.items():
        assert result.returncode == 0, result.stderr
        print(f"--- {backend}\n{result.stdout}")
    assert tables["postgresql"].stdout == tables["duckdb"].stdout
    assert tables["clickhouse"].stdout == tables["duckdb"].stdout


def test_stats_on_postgresql_as_a_new_user_types_it(stores: Stores) -> None:
    """No ?schema=: the sink's schema setting is the default, as documented."""
    result = real_cli(
        "stats",
        "--store",
        DSN,
        *SPRING,
        env={"SMS_REPLIES_POSTGRES_SCHEMA_NAME": stores.pg_schema},
    )
    assert result.returncode == 0, result.stderr
    assert "distinct senders" in result.stdout
    from_env = real_cli(
        "stats",
        "--format",
        "json",
        *SPRING,
        env={"SMS_REPLIES_ANALYTICS_STORE": stores.postgresql},
    )
    duckdb = cli("stats", "--format", "json", "--store", stores.duckdb, *SPRING)
    assert json_of(from_env) == json_of(duckdb)


def test_password_never_shown(stores: Stores) -> None:
    url = "postgresql://postgres:s3cret-pw@127.0.0.1:1/test"
    result = real_cli("stats", "--store", url)
    assert result.returncode == 1
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "postgres:***@127.0.0.1:1" in result.stderr
    assert "s3cret-pw" not in repr(parse_store_url(url, default_duckdb=Path("x")))
    assert isinstance(parse_store_url(url, default_duckdb=Path("x")), StoreURL)


# -- the opt-out list (issue 14) --------------------------------------------------------


def expected_optouts() -> dict[str, tuple[str, str]]:
    """sender -> (status, source) of every decided sender, by the decision rule."""
    resubscribe = frozenset(DEFAULT_RESUBSCRIBE_KEYWORDS)
    decisions = [d for r in data_set() if (d := decision_of(r, resubscribe)) is not None]
    return {s: (d.status, d.source) for s, d in latest(decisions).items()}


def test_optouts_list_identical_and_exact(stores: Stores) -> None:
    lists = each_store(
        stores, lambda url: json_of(cli("optouts", "list", "--format", "json", "--store", url))
    )
    assert lists["postgresql"] == lists["duckdb"]
    assert lists["clickhouse"] == lists["duckdb"]
    got = {o["sender"]: (o["status"], o["source"]) for o in lists["duckdb"]["optouts"]}
    want = {s: v for s, v in expected_optouts().items() if v[0] == "opted_out"}
    assert got == want
    assert lists["duckdb"]["count"] == len(want)
    # Written out by hand: START after the STOP opts back in, "Oui" changes nothing.
    assert OPT_IN not in got
    assert got[OPT_OUT] == ("opted_out", "text")
    assert got[SHORT_STOP] == ("opted_out", "provider")
    assert got[pseudonymize(HASHED, KEY)] == ("opted_out", "text")
    everyone = each_store(
        stores,
        lambda url: json_of(cli("optouts", "list", "--all", "--format", "json", "--store", url)),
    )
    assert everyone["clickhouse"] == everyone["postgresql"] == everyone["duckdb"]
    by_sender = {o["sender"]: o for o in everyone["duckdb"]["optouts"]}
    assert (by_sender[OPT_IN]["status"], by_sender[OPT_IN]["source"]) == ("opted_in", "keyword")
    assert by_sender[OPT_IN]["since"] == "2025-03-28T10:00:00+01:00"  # START, in Paris time
    recent = each_store(
        stores,
        lambda url: json_of(
            cli("optouts", "list", "--since", "2025-03-30", "--format", "json", "--store", url)
        ),
    )
    assert recent["clickhouse"] == recent["postgresql"] == recent["duckdb"]
    assert all(o["since"] >= "2025-03-30" for o in recent["duckdb"]["optouts"])
    assert SHORT_STOP in {o["sender"] for o in recent["duckdb"]["optouts"]}
    assert OPT_OUT not in {o["sender"] for o in recent["duckdb"]["optouts"]}


@pytest.mark.parametrize("backend", ["duckdb", "postgresql", "clickhouse"])
def test_optouts_check_any_number_format(stores: Stores, backend: str) -> None:
    url = stores.urls()[backend]

    def check(phone: str, **env: str) -> Any:
        return json_of(
            cli("optouts", "check", "--phone", phone, "--format", "json", "--store", url, env=env)
        )

    national = "0" + OPT_OUT[3:]  # 0611111102
    assert check(national)["opted_out"] is True
    assert check("06 11 11 11 02")["decision"]["reply_id"] == "same-0913"
    assert check(OPT_OUT[1:])["opted_out"] is True  # 33611111102
    back_in = check(OPT_IN)
    assert (back_in["opted_out"], back_in["decision"]["status"]) == (False, "opted_in")
    assert check("+33699999999") == {
        "phone": "+33699999999",
        "looked_up": ["+33699999999"],
        "opted_out": False,
        "decision": None,
    }
    # With the key, the number given is hashed: the store holds only the pseudonym.
    assert check("0" + HASHED[3:])["opted_out"] is False
    hashed = check("0" + HASHED[3:], SMS_REPLIES_PSEUDONYMIZE_KEY=KEY.decode())
    assert hashed["opted_out"] is True
    assert hashed["decision"]["sender"] == pseudonymize(HASHED, KEY)
    assert hashed["looked_up"] == [HASHED, pseudonymize(HASHED, KEY)]
    text = cli("optouts", "check", "--phone", national, "--store", url)
    assert "OPTED OUT since 2025-03-29T09:00:00+01:00" in text.stdout


@pytest.mark.parametrize("backend", ["duckdb", "postgresql", "clickhouse"])
async def test_api_optouts_is_the_cli_json(stores: Stores, backend: str) -> None:
    url = stores.urls()[backend]
    store = parse_store_url(url, default_duckdb=Path("unused"))
    token = "t" * 32
    app = create_api_app(store, access=ApiAccess(token=SecretStr(token)))
    async with TestClient(TestServer(app), headers={"Authorization": f"Bearer {token}"}) as c:
        response = await c.get("/api/optouts")
        assert response.status == 200
        api = await response.json()
        response = await c.get("/api/optouts", params={"all": "true", "since": "2025-03-28"})
        api_all = await response.json()
    cli_json = await asyncio.to_thread(
        lambda: json_of(cli("optouts", "list", "--format", "json", "--store", url))
    )
    assert api == cli_json
    assert api["count"] > 3
    cli_all = await asyncio.to_thread(
        lambda: json_of(
            cli(
                "optouts",
                "list",
                "--all",
                "--since",
                "2025-03-28",
                "--format",
                "json",
                "--store",
                url,
            )
        )
    )
    assert api_all == cli_all


async def _api_answers(url: str) -> dict[str, Any]:
    """The API's answers for one store (summary, timeseries, campaigns, reply pages)."""
    store = parse_store_url(url, default_duckdb=Path("unused"))
    token = "t" * 32
    app = create_api_app(store, access=ApiAccess(token=SecretStr(token)))
    spring = {"since": "2025-03-27", "until": "2025-04-02"}
    answers: dict[str, Any] = {}
    async with TestClient(TestServer(app), headers={"Authorization": f"Bearer {token}"}) as c:

        async def get(path: str, **params: str) -> Any:
            response = await c.get(path, params=params)
            assert response.status == 200, await response.text()
            return await response.json()

        answers["summary"] = await get("/api/summary", **spring, group_by="campaign")
        answers["timeseries"] = await get("/api/timeseries", **spring, bucket="hour")
        answers["by_day"] = await get("/api/timeseries", **spring, bucket="day", group_by="channel")
        answers["keywords"] = await get("/api/keywords", **spring, limit="5")
        campaigns = await get("/api/campaigns")
        for item in campaigns["campaigns"]:
            del item["campaign"]["created_at"]
        answers["campaigns"] = campaigns
        pages, params = [], {"limit": "17", "complete": "false"}
        while True:  # cursor paging across stores
            page = await get("/api/replies", **params)
            for item in page["items"]:
                del item["ingested_at"]  # when each store wrote it
            pages.append(page)
            if not page["next_cursor"]:
                break
            params["cursor"] = page["next_cursor"]
        answers["incomplete_pages"] = pages
        answers["sender"] = await get("/api/replies", sender="0" + OPT_IN[3:], limit="10")
        for name in ("spring-A", "url-only", "short-B"):  # URL, undeclared, window rules
            answers[name] = await get("/api/replies", campaign=name, limit="1000")
        for key in ("sender", "spring-A", "url-only", "short-B"):
            for item in answers[key]["items"]:
                del item["ingested_at"]
    return answers


async def test_api_answers_identical_in_the_three_stores(stores: Stores) -> None:
    answers = {backend: await _api_answers(url) for backend, url in stores.urls().items()}
    for name, answer in answers["duckdb"].items():
        assert answers["postgresql"][name] == answer, name
        assert answers["clickhouse"][name] == answer, name
    duckdb = answers["duckdb"]
    assert len(duckdb["incomplete_pages"]) >= 2
    assert [r["reply_id"] for r in duckdb["sender"]["items"]] == [
        "same-0912",
        "same-0910",
        "same-0911",
    ]
    # A campaign's rows are as many as its figures count, in every store.
    by_name = {c["campaign"]["name"]: c for c in duckdb["campaigns"]["campaigns"]}
    for name in ("spring-A", "short-B"):
        assert len(duckdb[name]["items"]) == by_name[name]["stats"]["replies"] > 0, name
    assert duckdb["url-only"]["items"]
    cli_json = json_of(
        cli(
            "stats", "--format", "json", "--store", stores.duckdb, *SPRING, "--group-by", "campaign"
        )
    )
    assert duckdb["summary"] == cli_json


@pytest.mark.parametrize("backend", ["duckdb", "postgresql", "clickhouse"])
def test_campaign_add_replace_delete(stores: Stores, backend: str) -> None:
    url = stores.urls()[backend]
    add = ["campaign", "add", "--store", url, "temp", "--short-number", "--start", "2025-03-29"]

    def listed() -> dict[str, Any]:
        campaigns = json_of(cli("campaign", "list", "--format", "json", "--store", url))
        return {c["campaign"]["name"]: c for c in campaigns["campaigns"]}

    assert cli(*add, "--end", "2025-03-30").returncode == 0
    again = cli(*add, "--end", "2025-03-30")
    assert again.returncode == 1
    assert "already exists" in again.stdout + again.stderr
    replaced = cli(*add, "--end", "2025-03-31", "--delivered", "10", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    temp = listed()["temp"]
    assert temp["campaign"]["end"] == "2025-03-31T00:00:00+02:00"
    assert temp["campaign"]["delivered"] == 10
    assert cli("campaign", "delete", "--store", url, "temp").returncode == 0
    assert "temp" not in listed()
    gone = cli("campaign", "delete", "--store", url, "temp")
    assert gone.returncode == 1
    assert "unknown campaign" in gone.stdout + gone.stderr


def test_clickhouse_figures_with_duplicates_and_once_merged(
    stores: Stores, clickhouse_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader drops FINAL only when every partition of ``replies`` is one merged part.

    A copy of the store gets duplicates of some replies (two racing sinks): the
    figures still equal DuckDB's (read with FINAL); after ``OPTIMIZE ... FINAL``
    they still do, and then the statements read ``replies`` without FINAL.
    """
    source = stores.clickhouse.rsplit("/", 1)[1]
    copy = f"{source}_merged"
    client = Client(clickhouse_server.host, port=clickhouse_server.port)
    statements: list[str] = []
    run = ClickHouseReader._run

    def spy(self: ClickHouseReader, sql: str, params: Any) -> list[tuple[Any, ...]]:
        statements.append(sql)
        return run(self, sql, params)

    monkeypatch.setattr(ClickHouseReader, "_run", spy)
    url = f"clickhouse://{clickhouse_server.host}:{clickhouse_server.port}/{copy}"
    query = [*SPRING, "--group-by", "campaign", "--top", "20"]
    expected = json_of(cli("stats", "--format", "json", "--store", stores.duckdb, *query))
    try:
        client.execute(f"CREATE DATABASE `{copy}`")
        for table in ("replies", "campaigns"):
            client.execute(f"CREATE TABLE `{copy}`.{table} AS `{source}`.{table}")
            # No background merge meanwhile: it would collapse the duplicates.
            client.execute(f"SYSTEM STOP MERGES `{copy}`.{table}")
            client.execute(f"INSERT INTO `{copy}`.{table} SELECT * FROM `{source}`.{table}")
        client.execute(
            f"INSERT INTO `{copy}`.replies SELECT * FROM `{source}`.replies "
            "ORDER BY reply_id LIMIT 20"
        )
        assert json_of(cli("stats", "--format", "json", "--store", url, *query)) == expected
        reads = [s for s in statements if ".replies AS r" in s]
        assert reads
        assert all("AS r FINAL" in s for s in reads)

        client.execute(f"SYSTEM START MERGES `{copy}`.replies")
        client.execute(f"OPTIMIZE TABLE `{copy}`.replies FINAL")
        statements.clear()
        assert json_of(cli("stats", "--format", "json", "--store", url, *query)) == expected
        reads = [s for s in statements if ".replies AS r" in s]
        assert reads
        assert not any("AS r FINAL" in s for s in reads)
        with open_store(parse_store_url(url, default_duckdb=Path("unused"))) as reader:
            assert isinstance(reader, ClickHouseReader)
            assert collapsed(reader.replies_parts())
    finally:
        client.execute(f"DROP DATABASE IF EXISTS `{copy}`")
        client.disconnect()


def test_campaign_figures_beyond_the_clickhouse_bitmask(
    clickhouse_server: LocalServer, tmp_path: Path
) -> None:
    """More declared campaigns than ClickHouse's one-UInt64 membership holds: the array
    path, and a summary by campaign, give DuckDB's figures."""
    many = len(CAMPAIGNS) + CLICKHOUSE_MASK_CAMPAIGNS + 5
    extra = [
        Campaign.create(
            f"wave-{index:03d}",
            recipient=NUMBER_A if index % 2 else NUMBER_B,
            start=utc("2025-03-27T00:00") + timedelta(hours=index),
            end=utc("2025-03-29T00:00") + timedelta(hours=2 * index),
        )
        for index in range(many - len(CAMPAIGNS))
    ]
    name = f"many_campaigns_{uuid.uuid4().hex[:10]}"
    path = tmp_path / "replies.duckdb"
    ch = ClickHouseSettings(host=clickhouse_server.host, port=clickhouse_server.port, database=name)
    asyncio.run(_write([DuckDBSink(path, serve=False), ClickHouseSink(ch)], data_set()))
    urls = {
        "duckdb": f"duckdb://{path}",
        "clickhouse": f"clickhouse://{clickhouse_server.host}:{clickhouse_server.port}/{name}",
    }
    try:
        outputs = {}
        for backend, url in urls.items():
            store = parse_store_url(url, default_duckdb=path)
            for campaign in (*CAMPAIGNS, *extra):
                declare_campaign(store, campaign)
            listed = json_of(cli("campaign", "list", "--format", "json", "--store", url))
            for item in listed["campaigns"]:
                del item["campaign"]["created_at"]
            grouped = json_of(
                cli("stats", "--format", "json", "--store", url, *SPRING, "--group-by", "campaign")
            )
            outputs[backend] = (listed, grouped)
        assert outputs["clickhouse"] == outputs["duckdb"]
        listed, grouped = outputs["duckdb"]
        assert len(listed["campaigns"]) == many > CLICKHOUSE_MASK_CAMPAIGNS
        assert sum(1 for c in listed["campaigns"] if c["stats"]["replies"]) > 10
        assert grouped["groups"]
    finally:
        client = Client(clickhouse_server.host, port=clickhouse_server.port)
        try:
            client.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            client.disconnect()
