"""The analytics API's OpenAPI patterns promise what the code accepts: every string a
pattern allows is accepted by the code behind it (else a generated client gets a 400
for a request its document calls valid), and the document lists exactly the zones
the code knows. Generated from the patterns themselves, as schemathesis would."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_replies.analytics.api import (
    CAMPAIGN_NAME_PATTERN,
    FRENCH_NUMBER_PATTERN,
    openapi_document,
)
from sms_replies.analytics.campaigns import Campaign, normalise_number
from sms_replies.analytics.params import (
    TIME_PATTERN,
    InvalidQueryError,
    known_zones,
    parse_time,
    parse_zone,
)
from sms_replies.analytics.queries import CURSOR_PATTERN, decode_cursor, encode_cursor, to_plain

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


@settings(max_examples=500)
@given(text=st.from_regex(TIME_PATTERN), zone=st.sampled_from(sorted(known_zones())))
def test_every_time_the_pattern_allows_is_read(text: str, zone: str) -> None:
    parsed = parse_time(text, tz=zone, now=NOW, param="since")
    # Far from the ends of Python's and DuckDB's ranges, in any zone.
    assert (
        datetime(1753, 1, 1, tzinfo=UTC) < parsed.astimezone(UTC) < datetime(3001, 1, 2, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-29",
        "1900-02-29",
        "2100-02-29",
        "2025-04-31",
        "1899-12-31",
        "3000-01-01",
        "",
        " 7d",
        "7 d",
        "24:00",
        "2025-03-01T24:00",
        "2025-03-01T08:00+24:00",
        "\u0662\u0660\u0662\u0665-\u0660\u0663-\u0660\u0661",  # Arabic-Indic digits
        "999999d",
        "2025-03-01 08:00",
    ],
)
def test_the_pattern_refuses(text: str) -> None:
    assert not re.search(TIME_PATTERN, text)


def test_leap_days_the_pattern_allows() -> None:
    for year in (1904, 1996, 2000, 2024, 2400):
        assert re.search(TIME_PATTERN, f"{year}-02-29")


@settings(max_examples=300)
@given(st.from_regex(FRENCH_NUMBER_PATTERN))
def test_every_recipient_the_pattern_allows_is_a_french_number(text: str) -> None:
    assert normalise_number(text).startswith("+33")


@settings(max_examples=300)
@given(st.from_regex(CAMPAIGN_NAME_PATTERN).filter(lambda n: len(n) <= 200))
def test_every_name_the_pattern_allows_makes_a_campaign(name: str) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    Campaign.create(name, start=start, end=start + timedelta(days=1), short_number=True)


@settings(max_examples=300)
@given(st.from_regex(CURSOR_PATTERN))
def test_every_cursor_the_pattern_allows_is_a_position(cursor: str) -> None:
    us, _ = decode_cursor(cursor)
    assert 0 <= us < 10**18


def test_cursor_round_trip() -> None:
    cursor = encode_cursor(1_743_300_000_000_000, "0f3a")
    assert re.search(CURSOR_PATTERN, cursor)
    assert decode_cursor(cursor) == (1_743_300_000_000_000, "0f3a")
    with pytest.raises(InvalidQueryError):
        decode_cursor("01.x")


def test_document_lists_exactly_the_zones_the_code_knows() -> None:
    listed = openapi_document()["components"]["schemas"]["TimeZone"]["enum"]
    assert set(listed) == known_zones()
    for name in listed:
        parse_zone(name)
    with pytest.raises(InvalidQueryError):
        parse_zone("Mars/Olympus")


def test_times_before_standard_time_are_shown_in_utc() -> None:
    # Paris used local mean time (+00:09:21) until 1911: RFC 3339 has no seconds offset.
    lmt = datetime(1900, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))
    shown = to_plain({"t": lmt, "u": [datetime(2025, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))]})
    assert shown["t"] == lmt
    assert shown["t"].utcoffset() == timedelta(0)
    assert shown["u"][0].utcoffset() == timedelta(hours=1)
