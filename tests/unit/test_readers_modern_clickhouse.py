"""The analytics queries on a current ClickHouse (chdb, in-process): the same figures as DuckDB.

The integration suite reads Debian's clickhouse-server 18.16 (DateTime, whole
seconds). A current server's tables have ``DateTime64(3)``: the reader then binds
timestamps in milliseconds (``toDateTime64(…, 3, 'UTC')``). This runs the SQL the
ClickHouse reader compiles on chdb, over the sample replies (milliseconds
included), and compares every figure with DuckDB's for the same rows. chdb has no
native-protocol client: statements go through a stand-in for the driver that
substitutes the bound values as clickhouse-driver does.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from benchmarks.stores_backends import DuckDBBackend
from benchmarks.stores_chdb import ChdbReader
from benchmarks.stores_synth import Generator
from chdb import session as chdb_session
from tests.analytics_sample import SAMPLE_REPLIES, write_sample

from sms_replies.analytics.campaigns import (
    Campaign,
    campaign_stats,
    declare_campaign,
    delete_campaign,
)
from sms_replies.analytics.params import StatsQuery
from sms_replies.analytics.queries import ReplyFilter, list_replies, summary, timeseries
from sms_replies.analytics.queries import _membership as membership
from sms_replies.analytics.queries._membership import (
    CLICKHOUSE_MASK_CAMPAIGNS,
    WINDOW_TABLE_ENTRIES,
)
from sms_replies.schema import COLUMN_NAMES, to_row
from sms_replies.sinks.duckdb import DuckDBSink
from sms_replies.stores.ddl import CAMPAIGNS, REPLIES, Features, clickhouse_create
from sms_replies.stores.readers import open_store
from sms_replies.stores.url import StoreURL

DB = "modern"
FEATURES = Features("current", True, True, True)


def _json_row(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(COLUMN_NAMES, row, strict=True))
    for name, value in out.items():
        if isinstance(value, datetime):
            out[name] = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return out


# Received 400 ms before r5 (08:00:00 UTC): a bound in milliseconds tells them apart.
EARLY = dataclasses.replace(
    SAMPLE_REPLIES[5],
    reply_id="ms",
    received_at_ms=SAMPLE_REPLIES[4].received_at_ms - 400,
    last_part_at_ms=None,
)
SPRING_A = Campaign.create(
    "spring-A",
    recipient="+33700000001",
    start=datetime.fromisoformat("2025-03-29T00:00:00.500+01:00"),
    end=datetime.fromisoformat("2025-03-30T12:00+02:00"),
    delivered=100,
)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ChdbReader]]:
    path = tmp_path_factory.mktemp("duck") / "replies.duckdb"
    write_sample(path)
    asyncio.run(_write_duckdb(path, [EARLY]))
    declare_campaign(path, SPRING_A)
    session = chdb_session.Session(str(tmp_path_factory.mktemp("chdb")))
    session.query(f"CREATE DATABASE IF NOT EXISTS {DB}")
    for table in (REPLIES, CAMPAIGNS):
        session.query(clickhouse_create(table, DB, FEATURES))
    now = datetime.now(UTC)
    lines = "\n".join(
        orjson.dumps(_json_row(to_row(r, now))).decode()
        for r in (*SAMPLE_REPLIES, EARLY, SAMPLE_REPLIES[0])  # a repeat, collapsed by FINAL
    )
    session.query(f"INSERT INTO {DB}.replies FORMAT JSONEachRow\n{lines}")
    campaign = {
        "name": SPRING_A.name,
        "channel": SPRING_A.channel,
        "recipient": SPRING_A.recipient,
        "start_at": "2025-03-28 23:00:00.500",
        "end_at": "2025-03-30 10:00:00.000",
        "delivered": SPRING_A.delivered,
        "created_at": now.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
    }
    session.query(
        f"INSERT INTO {DB}.campaigns FORMAT JSONEachRow\n{orjson.dumps(campaign).decode()}"
    )
    yield path, ChdbReader(session, DB)
    session.close()


async def _write_duckdb(path: Path, replies: list[Any]) -> None:
    async with DuckDBSink(path, serve=False) as sink:
        await sink.write(replies)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


RANGE = StatsQuery(start=at("2025-03-28T00:00+01:00"), end=at("2025-03-31T00:00+02:00"))
QUERIES = [
    RANGE,
    dataclasses.replace(RANGE, group_by="recipient"),
    dataclasses.replace(RANGE, group_by="campaign"),
    dataclasses.replace(RANGE, campaign="spring-A", bucket="hour"),
    dataclasses.replace(RANGE, bucket="day", group_by="channel"),
    # Bounds in milliseconds: r3's last part is at 00:05:04.200 UTC; r1 at 22:30:00.000.
    StatsQuery(start=at("2025-03-29T22:30:00.001Z"), end=at("2025-03-30T08:00:00.000Z")),
    # Only EARLY (07:59:59.600): seconds rounded up would find nothing.
    StatsQuery(start=at("2025-03-30T07:59:59.500Z"), end=at("2025-03-30T08:00:00.000Z")),
]


@pytest.mark.parametrize("q", QUERIES)
def test_same_figures_as_duckdb(stores: tuple[Path, ChdbReader], q: StatsQuery) -> None:
    path, chdb = stores
    with open_store(StoreURL("duckdb", path=path)) as duck:
        assert summary(chdb, q) == summary(duck, q)
        assert timeseries(chdb, q) == timeseries(duck, q)
    if q.start == at("2025-03-30T07:59:59.500Z"):
        assert summary(chdb, q).totals.replies == 1
    assert chdb.dialect.name == "clickhouse"
    assert getattr(chdb.dialect, "datetime64", False)  # detected from the table's types


def test_campaigns_and_rows_as_duckdb(stores: tuple[Path, ChdbReader]) -> None:
    path, chdb = stores
    with open_store(StoreURL("duckdb", path=path)) as duck:
        (a,) = campaign_stats(chdb)
        (b,) = campaign_stats(duck)
        assert a.stats == b.stats
        assert a.stats.replies == 4
        assert a.stats.median_assembly_seconds == pytest.approx(4.2)  # milliseconds kept
        f = ReplyFilter(start=at("2025-03-29T22:30:00.000Z"), limit=3)
        rows = [list_replies(r, f) for r in (chdb, duck)]
        for page in rows:
            for item in page.items:
                del item["ingested_at"]
        assert rows[0] == rows[1]
        assert rows[0].next_cursor is not None
        after = [
            list_replies(r, dataclasses.replace(f, cursor=rows[0].next_cursor))
            for r in (chdb, duck)
        ]
        assert [i["reply_id"] for i in after[0].items] == [i["reply_id"] for i in after[1].items]


def _campaign_json(c: Campaign) -> str:
    def ms(t: datetime) -> str:
        return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    row = {
        "name": c.name,
        "channel": c.channel,
        "recipient": c.recipient,
        "start_at": ms(c.start),
        "end_at": ms(c.end),
        "delivered": c.delivered,
        "created_at": ms(datetime.now(UTC)),
    }
    return orjson.dumps(row).decode()


#: Two windows on one long number (overlapping), one on the other, one on the short number.
WINDOWS = [
    Campaign.create(
        "a1", recipient="+33700000001", start=at("2025-03-29T22:00Z"), end=at("2025-03-30T10:00Z")
    ),
    Campaign.create(
        "a2", recipient="+33700000001", start=at("2025-03-30T00:00Z"), end=at("2025-03-31T00:00Z")
    ),
    Campaign.create(
        "b", recipient="+33700000002", start=at("2025-03-30T00:00Z"), end=at("2025-03-30T09:59Z")
    ),
    Campaign.create(
        "s", short_number=True, start=at("2025-03-30T08:30Z"), end=at("2025-03-30T12:00Z")
    ),
]


@pytest.mark.parametrize("table_entries", [WINDOW_TABLE_ENTRIES, 0], ids=["table", "compared"])
def test_windows_sharing_a_number_as_duckdb(
    stores: tuple[Path, ChdbReader],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    table_entries: int,
) -> None:
    """ClickHouse marks each reply's number once (an integer per row), then finds its
    windows in a table of (number, time slice) or, beyond the table's size, compares
    each window: windows on one number, on the other, and on the short number select
    the replies DuckDB's branches select."""
    monkeypatch.setattr(membership, "WINDOW_TABLE_ENTRIES", table_entries)
    path = tmp_path / "replies.duckdb"
    write_sample(path)
    for c in WINDOWS:
        declare_campaign(path, c)
    session = stores[1].session  # one chdb engine per process: a database of its own
    db = f"windows_{table_entries}"
    session.query(f"CREATE DATABASE IF NOT EXISTS {db}")
    for table in (REPLIES, CAMPAIGNS):
        session.query(clickhouse_create(table, db, FEATURES))
    now = datetime.now(UTC)
    lines = "\n".join(orjson.dumps(_json_row(to_row(r, now))).decode() for r in SAMPLE_REPLIES)
    session.query(f"INSERT INTO {db}.replies FORMAT JSONEachRow\n{lines}")
    rows = "\n".join(_campaign_json(c) for c in WINDOWS)
    session.query(f"INSERT INTO {db}.campaigns FORMAT JSONEachRow\n{rows}")
    chdb = ChdbReader(session, db)
    with open_store(StoreURL("duckdb", path=path)) as duck:
        figures = [{s.campaign.name: s.stats for s in campaign_stats(r)} for r in (chdb, duck)]
        grouped = dataclasses.replace(RANGE, group_by="campaign")
        assert summary(chdb, grouped).groups == summary(duck, grouped).groups
    assert figures[0] == figures[1]
    assert {k: v.replies for k, v in figures[1].items()} == {"a1": 4, "a2": 2, "b": 1, "s": 1}


#: Synthetic replies (benchmarks.stores_synth): URL campaigns, STOPs, long replies, a few
#: very active senders. Its twenty campaigns' windows overlap on their numbers.
SYNTH_ROWS = 40_000
#: Declared on top: over the whole span on the short number, so it overlaps every
#: short-number campaign; campaign-19 is undeclared, its URL replies then name a
#: campaign nobody declared.
EVERYTHING = Campaign.create(
    "everything", short_number=True, start=at("2020-01-01T00:00Z"), end=at("2030-01-01T00:00Z")
)


@pytest.fixture(scope="module")
def synthetic(
    stores: tuple[Path, ChdbReader], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ChdbReader]:
    """The same synthetic replies and campaigns in DuckDB and in chdb (database ``synth``)."""
    root = tmp_path_factory.mktemp("synth")
    DuckDBBackend(root).load(Generator(SYNTH_ROWS))
    path = root / "scale.duckdb"
    delete_campaign(path, "campaign-19")
    declare_campaign(path, EVERYTHING)
    session = stores[1].session
    session.query("CREATE DATABASE IF NOT EXISTS synth")
    for table in (REPLIES, CAMPAIGNS):
        session.query(clickhouse_create(table, "synth", FEATURES))
    names = ", ".join(COLUMN_NAMES)
    for chunk in Generator(SYNTH_ROWS).chunks():  # noqa: B007 (read by Python(chunk))
        session.query(f"INSERT INTO synth.replies ({names}) SELECT {names} FROM Python(chunk)")
    with open_store(StoreURL("duckdb", path=path)) as duck:
        declared = [s.campaign for s in campaign_stats(duck)]
    rows = "\n".join(_campaign_json(c) for c in declared)
    session.query(f"INSERT INTO synth.campaigns FORMAT JSONEachRow\n{rows}")
    return path, ChdbReader(session, "synth")


@pytest.mark.parametrize("grouping_sets", [True, False], ids=["grouping-sets", "by-mask"])
@pytest.mark.parametrize("mask_campaigns", [CLICKHOUSE_MASK_CAMPAIGNS, 3], ids=["bits", "arrays"])
def test_campaign_figures_of_synthetic_replies_as_duckdb(
    synthetic: tuple[Path, ChdbReader],
    monkeypatch: pytest.MonkeyPatch,
    mask_campaigns: int,
    grouping_sets: bool,
) -> None:
    """ClickHouse's campaign figures (replies grouped by sender and by their campaigns'
    bits on a current server, by bits only as on 18.16, each campaign merging the groups
    of its bit; beyond the bits, one row per membership) are DuckDB's: overlapping
    windows, URL campaigns declared or not, STOPs, long replies; every campaign, and
    one by name."""
    monkeypatch.setattr(membership, "CLICKHOUSE_MASK_CAMPAIGNS", mask_campaigns)
    path, chdb = synthetic
    assert chdb.has_grouping_sets()  # ClickHouse 26 in chdb
    monkeypatch.setattr(chdb, "_grouping_sets", grouping_sets)
    with open_store(StoreURL("duckdb", path=path)) as duck:
        figures = [_figures(campaign_stats(r)) for r in (chdb, duck)]
        one = [_figures(campaign_stats(r, name="campaign-04")) for r in (chdb, duck)]
    assert figures[0] == figures[1]
    assert one[0] == one[1] == {"campaign-04": figures[1]["campaign-04"]}
    assert len(figures[1]) == 20
    assert "campaign-19" not in figures[1]
    every = figures[1]["everything"][0]
    assert every.replies > 0
    assert every.stop_senders > 0
    assert every.median_assembly_seconds is not None
    assert all(f[0].replies > 0 and f[0].multipart > 0 for f in figures[1].values())


def _figures(items: list[Any]) -> dict[str, tuple[Any, ...]]:
    """Each campaign's figures and rates (its created_at is each store's own)."""
    return {s.campaign.name: (s.stats, s.reply_rate, s.opt_out_rate) for s in items}
