"""Campaign declarations and their figures (store written by the real DuckDBSink)."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path

import pytest
from tests.analytics_sample import NUMBER_A, NUMBER_B, SAMPLE_REPLIES, write_sample

from sms_replies.analytics.campaigns import (
    Campaign,
    CampaignExistsError,
    campaign_stats,
    declare_campaign,
    delete_campaign,
    list_campaigns,
    normalise_number,
)
from sms_replies.analytics.params import InvalidQueryError, StatsQuery, UnknownCampaignError
from sms_replies.analytics.queries import summary
from sms_replies.analytics.store import open_reader
from sms_replies.records import Reply
from sms_replies.sinks.duckdb import DuckDBSink
from sms_replies.stores.readers import Reader, open_store
from sms_replies.stores.url import StoreURL


def reading(path: Path) -> AbstractContextManager[Reader]:
    return open_store(StoreURL("duckdb", path=path))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "replies.duckdb"
    write_sample(path)
    return path


def spring_a(**overrides: object) -> Campaign:
    kwargs: dict[str, object] = {
        "recipient": "+33 7 00 00 00 01",
        "start": at("2025-03-29T00:00+01:00"),
        "end": at("2025-03-30T12:00+02:00"),
        "delivered": 100,
        **overrides,
    }
    return Campaign.create("spring-A", **kwargs)  # type: ignore[arg-type]


def test_declare_list_delete(db: Path) -> None:
    stored = declare_campaign(db, spring_a())
    assert stored.recipient == NUMBER_A
    assert stored.created_at is not None
    with reading(db) as con:
        (listed,) = list_campaigns(con)
    assert (listed.name, listed.channel, listed.recipient, listed.delivered) == (
        "spring-A",
        "long_number",
        NUMBER_A,
        100,
    )
    assert listed.start == at("2025-03-29T00:00+01:00")
    with pytest.raises(CampaignExistsError):
        declare_campaign(db, spring_a())
    declare_campaign(db, spring_a(delivered=200), replace=True)
    with reading(db) as con:
        assert [c.delivered for c in list_campaigns(con)] == [200]
    delete_campaign(db, "spring-A")
    with reading(db) as con:
        assert list_campaigns(con) == []
    with pytest.raises(UnknownCampaignError):
        delete_campaign(db, "spring-A")


def test_declare_creates_the_store(tmp_path: Path) -> None:
    path = tmp_path / "new" / "replies.duckdb"
    declare_campaign(path, spring_a())
    with reading(path) as reader:
        assert [c.name for c in list_campaigns(reader)] == ["spring-A"]
    with open_reader(path) as con:
        assert con.execute("SELECT count(*) FROM replies").fetchone() == (0,)


def test_campaign_stats_over_whole_window(db: Path) -> None:
    declare_campaign(db, spring_a())
    declare_campaign(
        db,
        Campaign.create(
            "short-promo",
            short_number=True,
            start=at("2025-03-30T00:00Z"),
            end=at("2025-03-30T08:30Z"),
        ),
    )
    declare_campaign(
        db,
        Campaign.create(
            "january-B",
            recipient=NUMBER_B,
            start=at("2025-01-01T00:00Z"),
            end=at("2025-02-01T00:00Z"),
            delivered=50,
        ),
    )
    with reading(db) as con:
        items = {c.campaign.name: c for c in campaign_stats(con)}
        (only,) = campaign_stats(con, name="short-promo")
        with pytest.raises(UnknownCampaignError):
            campaign_stats(con, name="nope")
    a = items["spring-A"]
    assert (a.stats.replies, a.stats.senders, a.stats.stops) == (4, 2, 1)  # r1 r2 r3 r7
    assert a.stats.multipart == 1  # r3
    assert a.reply_rate == pytest.approx(0.02)
    assert a.opt_out_rate == pytest.approx(0.01)
    short = items["short-promo"]
    assert (short.stats.replies, short.stats.stops) == (1, 1)  # r5; r6 is after the end
    assert short.reply_rate is None
    assert short.opt_out_rate is None
    jan = items["january-B"]
    assert jan.stats.replies == 0
    assert jan.stats.stop_share is None
    assert jan.reply_rate == 0.0
    assert only.campaign.name == "short-promo"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"recipient": None}, "recipient"),
        ({"short_number": True}, "recipient"),
        ({"recipient": "hello"}, "recipient"),
        ({"recipient": "+33 1"}, "recipient"),
        ({"end": at("2025-03-28T00:00+01:00")}, "end"),
        ({"start": datetime(2025, 3, 29)}, "start"),
        ({"delivered": -1}, "delivered"),
    ],
)
def test_invalid_campaigns(kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidQueryError) as info:
        spring_a(**kwargs)
    assert info.value.param == param


def test_invalid_name() -> None:
    with pytest.raises(InvalidQueryError) as info:
        Campaign.create(
            "  ", recipient=NUMBER_A, start=at("2025-01-01T00:00Z"), end=at("2025-01-02T00:00Z")
        )
    assert info.value.param == "name"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+33700000001", "+33700000001"),
        ("33700000001", "+33700000001"),
        ("07 00 00 00 01", "+33700000001"),
        ("+44 20 7946 0000", "+442079460000"),
    ],
)
def test_normalise_number(text: str, expected: str) -> None:
    assert normalise_number(text) == expected


def test_a_reply_with_a_campaign_belongs_to_that_campaign_only(tmp_path: Path) -> None:
    path = tmp_path / "replies.duckdb"
    write_sample(path)
    from_url = SAMPLE_REPLIES[0]
    extra = [
        # Through spring-A's URL, but to another number and weeks after its window.
        dataclasses.replace(
            from_url,
            reply_id="u1",
            recipient=NUMBER_B,
            received_at_ms=ms("2025-04-15T10:00Z"),
            campaign="spring-A",
        ),
        # Through spring-A's URL on the short number (a long-number campaign's window).
        dataclasses.replace(
            from_url,
            reply_id="u3",
            channel="short_number",
            recipient=None,
            sender="+33600000008",
            campaign="spring-A",
        ),
        # In spring-A's window and to its number, but through another campaign's URL.
        dataclasses.replace(
            from_url,
            reply_id="u2",
            sender="+33600000009",
            received_at_ms=ms("2025-03-29T23:30Z"),
            campaign="summer-B",
            tag="t",
        ),
    ]
    asyncio.run(write_replies(path, extra))
    declare_campaign(path, spring_a())
    with reading(path) as con:
        (a,) = campaign_stats(con, name="spring-A")
        in_range = StatsQuery(start=at("2025-03-01T00:00Z"), end=at("2025-05-01T00:00Z"))
        grouped = summary(con, dataclasses.replace(in_range, group_by="campaign"))
        filtered = summary(con, dataclasses.replace(in_range, campaign="spring-A"))
        summer = summary(con, dataclasses.replace(in_range, campaign="summer-B"))
        with pytest.raises(UnknownCampaignError):
            summary(con, dataclasses.replace(in_range, campaign="never-used"))
        with pytest.raises(UnknownCampaignError):
            campaign_stats(con, name="summer-B")  # the list holds declared campaigns
    # r1 r2 r3 r7 by the window rule, u1 and u3 by their campaign; u2 is summer-B's.
    assert a.stats.replies == 6
    assert a.stats.senders == 3
    # summer-B is not declared: a group of its own all the same, with no rates.
    assert {g.key: g.stats.replies for g in grouped.groups} == {"spring-A": 6, "summer-B": 1}
    assert {g.key: g.reply_rate for g in grouped.groups} == {
        "spring-A": pytest.approx(0.03),
        "summer-B": None,
    }
    assert filtered.totals.replies == 6
    assert summer.totals.replies == 1
    assert summer.totals.senders == 1


async def write_replies(path: Path, replies: list[Reply]) -> None:
    async with DuckDBSink(path, serve=False) as sink:
        await sink.write(replies)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)
