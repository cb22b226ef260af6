"""Analytics queries on a DuckDB file written by the real DuckDBSink.

The data set is ``tests.analytics_sample`` (its docstring lists the rows);
every expected figure below is counted by hand from that table.
"""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from tests.analytics_sample import NUMBER_A, NUMBER_B, SAMPLE_REPLIES, write_sample

from sms_replies.analytics.campaigns import Campaign, declare_campaign
from sms_replies.analytics.params import (
    Bucket,
    InvalidQueryError,
    StatsQuery,
    UnknownCampaignError,
    parse_time,
    time_range,
)
from sms_replies.analytics.queries import (
    ReplyFilter,
    _timeseries,
    bucket_starts,
    list_replies,
    summary,
    timeseries,
    top_keywords,
)
from sms_replies.analytics.store import open_reader
from sms_replies.records import Reply
from sms_replies.sinks.duckdb import DuckDBSink
from sms_replies.stores.readers import Reader, open_store
from sms_replies.stores.url import StoreURL

PARIS = "Europe/Paris"


def reading(path: Path) -> AbstractContextManager[Reader]:
    return open_store(StoreURL("duckdb", path=path))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# The two Paris days 2025-03-29 and 2025-03-30 (the second one is 23 h long).
RANGE = StatsQuery(start=at("2025-03-29T00:00+01:00"), end=at("2025-03-31T00:00+02:00"))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "replies.duckdb"
    write_sample(path)
    return path


def test_sink_kept_first_copy_of_repeated_reply(db: Path) -> None:
    with open_reader(db) as con:
        rows = con.execute("SELECT reply_id, text FROM replies ORDER BY reply_id").fetchall()
    assert len(rows) == 9
    assert rows[0] == ("r1", "Oui merci")


def test_summary_totals(db: Path) -> None:
    with reading(db) as con:
        result = summary(con, RANGE)
    t = result.totals
    # r1..r8 are in range, r9 (2025-03-28) is not.
    assert t.replies == 8
    assert t.senders == 6  # +336...01 to ...06
    assert t.stops == 2  # r2 (text), r5 (provider)
    assert t.stop_senders == 2
    assert t.stop_share == pytest.approx(2 / 8)
    assert t.multipart == 2  # r3 (2/2), r4 (2/3)
    assert t.multipart_share == pytest.approx(2 / 8)
    assert t.incomplete == 1  # r4
    assert t.incomplete_share == pytest.approx(1 / 8)
    # Long replies in range: r3 (4.2 s), r4 (11.8 s): median (4.2 + 11.8) / 2 = 8.0.
    # The six single messages (0 s) would pull it to 0 if they counted.
    assert t.median_assembly_seconds == pytest.approx(8.0)
    assert result.median_assembly_available is True
    assert result.groups == []


def test_top_keywords_skip_empty_and_break_ties_alphabetically(db: Path) -> None:
    with reading(db) as con:
        keywords = top_keywords(con, RANGE)
    assert [(k.keyword, k.replies) for k in keywords] == [
        ("OUI", 3),  # r1, r4, r7
        ("STOP", 2),  # r2, r5
        ("INFO", 1),
        ("NON", 1),
    ]  # r8's empty keyword is not listed
    assert keywords[0].share == pytest.approx(3 / 8)
    with reading(db) as con:
        top2 = top_keywords(con, StatsQuery(start=RANGE.start, end=RANGE.end, top=2))
    assert [k.keyword for k in top2] == ["OUI", "STOP"]


def test_group_by_channel_and_recipient(db: Path) -> None:
    with reading(db) as con:
        by_channel = summary(
            con, StatsQuery(start=RANGE.start, end=RANGE.end, group_by="channel")
        ).groups
        by_recipient = summary(
            con, StatsQuery(start=RANGE.start, end=RANGE.end, group_by="recipient")
        ).groups
    assert [(g.key, g.stats.replies, g.stats.stops) for g in by_channel] == [
        ("long_number", 6, 1),
        ("short_number", 2, 1),
    ]
    assert [(g.key, g.stats.replies, g.stats.senders) for g in by_recipient] == [
        (NUMBER_A, 4, 2),  # r1 r2 r3 r7 from ...01 and ...02
        (NUMBER_B, 2, 2),  # r4 r8
        (None, 2, 2),  # short number: r5 r6
    ]
    b = by_recipient[1].stats
    assert (b.multipart, b.incomplete, b.incomplete_share) == (1, 1, 0.5)


def test_day_buckets_are_paris_days(db: Path) -> None:
    with reading(db) as con:
        ts = timeseries(con, StatsQuery(start=RANGE.start, end=RANGE.end, bucket="day"))
    assert [t.isoformat() for t in ts.buckets] == [
        "2025-03-29T00:00:00+01:00",
        "2025-03-30T00:00:00+01:00",
    ]
    (series,) = ts.series
    # r2 (23:10 UTC on the 29th) is 00:10 on the 30th in Paris.
    assert [p.replies for p in series.points] == [1, 7]
    assert [p.stops for p in series.points] == [0, 2]
    assert series.points[1].stop_share == pytest.approx(2 / 7)


def test_day_buckets_in_utc_differ(db: Path) -> None:
    q = StatsQuery(
        start=at("2025-03-29T00:00+00:00"), end=at("2025-03-31T00:00+00:00"), tz="UTC", bucket="day"
    )
    with reading(db) as con:
        ts = timeseries(con, q)
    assert [p.replies for p in ts.series[0].points] == [2, 6]  # r1 r2 | r3..r8


def test_hour_buckets_across_spring_forward(db: Path) -> None:
    q = StatsQuery(
        start=at("2025-03-30T00:00+01:00"), end=at("2025-03-30T06:00+02:00"), bucket="hour"
    )
    with reading(db) as con:
        ts = timeseries(con, q)
    # 02:00 does not exist in Paris that night: 5 hours.
    assert [t.isoformat() for t in ts.buckets] == [
        "2025-03-30T00:00:00+01:00",
        "2025-03-30T01:00:00+01:00",
        "2025-03-30T03:00:00+02:00",
        "2025-03-30T04:00:00+02:00",
        "2025-03-30T05:00:00+02:00",
    ]
    points = ts.series[0].points
    assert [p.replies for p in points] == [1, 1, 1, 0, 0]  # r2, r3, r4
    assert [p.incomplete for p in points] == [0, 0, 1, 0, 0]
    assert [p.multipart for p in points] == [0, 1, 1, 0, 0]


@pytest.mark.parametrize("tz", [PARIS, "Asia/Kolkata", "UTC"])
def test_hour_buckets_counted_in_pieces_as_in_one_statement(
    db: Path, tz: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB counts hour buckets a day at a time (queries._timeseries._pieces): with
    pieces of one bucket, of two, or one statement, every point is the same (a DST change
    inside)."""
    q = dataclasses.replace(RANGE, bucket="hour", tz=tz)
    results = []
    for size in (1, 2, 10**6):
        monkeypatch.setattr(_timeseries, "PIECE_BUCKETS", size)
        with reading(db) as con:
            results.append(timeseries(con, q))
    assert results[0] == results[1] == results[2]
    with reading(db) as con:
        totals = summary(con, dataclasses.replace(q, bucket=None)).totals
    points = results[0].series[0].points
    assert sum(p.replies for p in points) == totals.replies > 0


@pytest.mark.parametrize("bucket", ["hour", "day"])
def test_empty_range_has_no_points(db: Path, bucket: Bucket) -> None:
    """since == until (the API clamps a reversed range to it): one statement, no rows
    (hour buckets on DuckDB built a UNION ALL of no pieces: an empty statement)."""
    q = StatsQuery(start=RANGE.end, end=RANGE.end, bucket=bucket)
    with reading(db) as con:
        ts = timeseries(con, q)
    assert [p.replies for s in ts.series for p in s.points] == []


def test_hour_buckets_in_half_hour_zone() -> None:
    tz = StatsQuery(start=at("2025-01-01T00:00Z"), end=at("2025-01-01T02:00Z"), tz="Asia/Kolkata")
    starts = bucket_starts(tz.start, tz.end, "hour", tz.zone)
    assert [s.astimezone(UTC).strftime("%H:%M") for s in starts] == ["23:30", "00:30", "01:30"]


def test_timeseries_grouped_by_channel(db: Path) -> None:
    q = StatsQuery(start=RANGE.start, end=RANGE.end, bucket="day", group_by="channel")
    with reading(db) as con:
        ts = timeseries(con, q)
    assert {s.key: [p.replies for p in s.points] for s in ts.series} == {
        "long_number": [1, 5],
        "short_number": [0, 2],
    }


def test_campaign_filter_and_grouping(db: Path) -> None:
    declare_campaign(
        db,
        Campaign.create(
            "spring-A",
            recipient="07 00 00 00 01",
            start=at("2025-03-29T00:00+01:00"),
            end=at("2025-03-30T12:00+02:00"),
            delivered=100,
        ),
    )
    declare_campaign(
        db,
        Campaign.create(
            "short-promo",
            short_number=True,
            start=at("2025-03-30T00:00Z"),
            end=at("2025-03-30T08:30Z"),
        ),
    )
    with reading(db) as con:
        only_a = summary(con, StatsQuery(start=RANGE.start, end=RANGE.end, campaign="spring-A"))
        grouped = summary(con, StatsQuery(start=RANGE.start, end=RANGE.end, group_by="campaign"))
    # spring-A: replies to NUMBER_A before 12:00 Paris on the 30th: r1 r2 r3 r7.
    assert only_a.totals.replies == 4
    assert only_a.totals.stops == 1
    assert [(k.keyword, k.replies) for k in only_a.keywords] == [
        ("OUI", 2),
        ("NON", 1),
        ("STOP", 1),
    ]
    assert grouped.totals.replies == 8  # totals ignore the grouping
    a, short = grouped.groups
    assert (a.key, a.stats.replies, a.delivered) == ("spring-A", 4, 100)
    assert a.reply_rate == pytest.approx(2 / 100)  # 2 distinct senders
    assert a.opt_out_rate == pytest.approx(1 / 100)  # 1 STOP sender
    assert (short.key, short.stats.replies, short.stats.stops) == ("short-promo", 1, 1)  # r5
    assert short.reply_rate is None  # delivered unknown


def test_unknown_campaign(db: Path) -> None:
    with reading(db) as con, pytest.raises(UnknownCampaignError):
        summary(con, StatsQuery(start=RANGE.start, end=RANGE.end, campaign="nope"))


def test_median_assembly_over_long_replies_only(db: Path) -> None:
    q = StatsQuery(start=at("2025-03-28T00:00+01:00"), end=RANGE.end, group_by="recipient")
    with reading(db) as con:
        result = summary(con, q)
    # Long replies: r9 (30 s), r3 (4.2 s), r4 (11.8 s) -> median 11.8 (mean: 15.33;
    # median of all nine replies, six of them 0 s: 0).
    assert result.totals.median_assembly_seconds == pytest.approx(11.8)
    groups = {g.key: g.stats.median_assembly_seconds for g in result.groups}
    assert groups[NUMBER_A] == pytest.approx(17.1)  # r3 4.2, r9 30 -> (4.2 + 30) / 2
    assert groups[NUMBER_B] == pytest.approx(11.8)  # r4 only (incomplete counts too)
    assert groups[None] is None  # the short number got no long reply


def test_reply_rows_carry_last_part_at(db: Path) -> None:
    with reading(db) as con:
        page = list_replies(con, ReplyFilter(sender="+33600000001"))
    r3, r1 = page.items
    assert "last_part_at" in page.columns
    # r3: 00:05:00 UTC + 4.2 s, shown in Paris (UTC+1 before 01:00 UTC that night).
    assert r3["last_part_at"].isoformat() == "2025-03-30T01:05:04.200000+01:00"
    assert r1["last_part_at"] == r1["received_at"]  # single message


def test_table_from_before_last_part_at(db: Path) -> None:
    """A store written by an older version, not yet migrated by a sink's setup()."""
    con = duckdb.connect(str(db))
    try:
        con.execute("ALTER TABLE replies DROP COLUMN last_part_at")
    finally:
        con.close()
    with reading(db) as con:
        result = summary(con, RANGE)
        page = list_replies(con, ReplyFilter(limit=1))
    assert result.median_assembly_available is False
    assert result.totals.median_assembly_seconds is None
    assert result.totals.replies == 8  # the other figures are unaffected
    assert result.totals.multipart == 2
    assert "last_part_at" not in page.columns
    assert [r["reply_id"] for r in page.items] == ["r8"]


def test_missing_store_reads_empty(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "replies.duckdb"
    with reading(path) as con:
        result = summary(con, StatsQuery(start=RANGE.start, end=RANGE.end, group_by="recipient"))
        ts = timeseries(con, StatsQuery(start=RANGE.start, end=RANGE.end, bucket="day"))
        page = list_replies(con, ReplyFilter())
    assert result.totals.replies == 0
    assert result.totals.stop_share is None
    assert result.groups == []
    assert result.keywords == []
    assert [p.replies for p in ts.series[0].points] == [0, 0]
    assert page.items == []
    assert not path.exists()  # reading never creates the store


def test_list_replies_filters_and_times_in_zone(db: Path) -> None:
    with reading(db) as con:
        stops = list_replies(con, ReplyFilter(is_stop=True))
        incomplete = list_replies(con, ReplyFilter(complete=False))
        by_sender = list_replies(con, ReplyFilter(sender="+33600000001"))
        oui_a = list_replies(con, ReplyFilter(keyword="OUI", recipient=NUMBER_A))
        ranged = list_replies(
            con,
            ReplyFilter(start=at("2025-03-30T00:00+01:00"), end=at("2025-03-30T10:00+02:00")),
        )
    assert [r["reply_id"] for r in stops.items] == ["r5", "r2"]
    assert [r["reply_id"] for r in incomplete.items] == ["r4"]
    assert [r["reply_id"] for r in by_sender.items] == ["r3", "r1"]
    assert [r["reply_id"] for r in oui_a.items] == ["r7", "r1", "r9"]
    # r5 at 08:00 UTC is exactly 10:00 Paris: the end is exclusive.
    assert [r["reply_id"] for r in ranged.items] == ["r4", "r3", "r2"]
    r2 = stops.items[1]
    assert r2["received_at"].isoformat() == "2025-03-30T00:10:00+01:00"
    assert r2["stop_source"] == "text"
    assert r2["provider_message_ids"] == ["r2-p1"]


def test_list_replies_cursor_pages_cover_everything_once(db: Path) -> None:
    seen: list[str] = []
    cursor = None
    with reading(db) as con:
        for _ in range(10):
            page = list_replies(con, ReplyFilter(limit=4, cursor=cursor))
            seen += [r["reply_id"] for r in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        offset_page = list_replies(con, ReplyFilter(limit=4, offset=8))
    assert seen == ["r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1", "r9"]
    assert [r["reply_id"] for r in offset_page.items] == ["r9"]
    assert offset_page.has_more is False


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 1, "cursor": "x"}, "cursor"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_reply_filter_validation(kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidQueryError) as info:
        ReplyFilter(**kwargs)  # type: ignore[arg-type]
    assert info.value.param == param


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"start": at("2025-03-02T00:00+00:00"), "end": at("2025-03-01T00:00+00:00")}, "since"),
        ({"start": datetime(2025, 3, 1), "end": at("2025-03-02T00:00+00:00")}, "since"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"group_by": "sender"}, "group_by"),
        ({"bucket": "week"}, "bucket"),
        ({"top": 0}, "top"),
        ({"campaign": " "}, "campaign"),
        ({"start": at("2000-01-01T00:00Z"), "bucket": "hour"}, "bucket"),
    ],
)
def test_stats_query_validation(kwargs: dict[str, object], param: str) -> None:
    base: dict[str, object] = {"start": RANGE.start, "end": RANGE.end}
    with pytest.raises(InvalidQueryError) as info:
        StatsQuery(**{**base, **kwargs})  # type: ignore[arg-type]
    assert info.value.param == param


def test_time_parsing_rules() -> None:
    now = at("2025-03-30T12:00+00:00")
    assert parse_time("2025-03-01", tz=PARIS) == at("2025-03-01T00:00+01:00")
    assert parse_time("2025-06-01T08:30", tz=PARIS) == at("2025-06-01T08:30+02:00")
    assert parse_time("2025-06-01T08:30Z", tz=PARIS) == at("2025-06-01T08:30+00:00")
    assert parse_time("24h", tz=PARIS, now=now) == at("2025-03-29T12:00+00:00")
    assert parse_time("7d", tz=PARIS, now=now) == at("2025-03-23T12:00+00:00")
    assert parse_time("90m", tz=PARIS, now=now) == at("2025-03-30T10:30+00:00")
    assert parse_time("2w", tz=PARIS, now=now) == at("2025-03-16T12:00+00:00")
    assert time_range(None, None, tz=PARIS, now=now) == (at("2025-03-23T12:00+00:00"), now)
    with pytest.raises(InvalidQueryError) as info:
        parse_time("yesterday", tz=PARIS, param="since")
    assert info.value.param == "since"


def test_hour_buckets_across_fall_back() -> None:
    q = StatsQuery(start=at("2025-10-26T00:00+02:00"), end=at("2025-10-26T04:00+01:00"))
    starts = bucket_starts(q.start, q.end, "hour", q.zone)
    # 02:00 happens twice in Paris that night: two buckets, told apart by their offsets.
    assert [s.astimezone(q.zone).isoformat() for s in starts] == [
        "2025-10-26T00:00:00+02:00",
        "2025-10-26T01:00:00+02:00",
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:00:00+01:00",
        "2025-10-26T03:00:00+01:00",
    ]


def test_median_assembly_leaves_out_long_replies_stored_with_one_part(db: Path) -> None:
    """A long reply of which one part arrived (incomplete, or a late part stored alone)
    has last_part_at = received_at: counted, its 0 s pulled the median down."""
    lone = [
        dataclasses.replace(
            SAMPLE_REPLIES[3],  # r4's shape: 3 parts announced, to NUMBER_B
            reply_id=f"lone{i}",
            parts_received=1,
            complete=False,
            provider_message_ids=(f"lone{i}-p1",),
            last_part_at_ms=None,
        )
        for i in range(3)
    ]
    asyncio.run(write_replies(db, lone))
    with reading(db) as con:
        result = summary(con, RANGE)
    assert result.totals.incomplete == 4  # r4 and the three lone parts: still counted there
    # r3 4.2 s and r4 11.8 s (two of its three parts): the three 0 s rows left out.
    assert result.totals.median_assembly_seconds == pytest.approx(8.0)


async def write_replies(path: Path, replies: list[Reply]) -> None:
    async with DuckDBSink(path, serve=False) as sink:
        await sink.write(replies)
