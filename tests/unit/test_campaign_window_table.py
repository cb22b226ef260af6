"""ClickHouse's table of campaign windows (``_window_table``): a reply's windows looked up
by (number, time slice) are the windows whose number it is on and whose [start, end) holds
its time, at the column's precision (whole seconds on 18.16, milliseconds on DateTime64)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from sms_replies.analytics.queries._membership import (
    WINDOW_TABLE_ENTRIES,
    _bound,
    _number,
    _window_table,
)
from sms_replies.analytics.queries._view import DeclaredCampaign

T0 = datetime(2026, 11, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NUMBERS = [("long_number", "+33700000001"), ("long_number", "+33700000002"), ("short_number", None)]


def _campaign(index: int, number: int, start_s: int, length_s: int, ms: int) -> DeclaredCampaign:
    channel, recipient = NUMBERS[number]
    start = T0 + timedelta(seconds=start_s, milliseconds=ms)
    return DeclaredCampaign(
        name=f"c{index}",
        channel=channel,
        recipient=recipient,
        start=start,
        end=start + timedelta(seconds=length_s),
        delivered=None,
    )


def _looked_up(table: object, number: int, t: int) -> int:
    """What the statement computes for a reply on ``number`` (1-based) at ``t``."""
    assert table is not None
    start, end, step, slices = table.start, table.end, table.step, table.slices  # type: ignore[attr-defined]
    if t < start or t >= end:
        return 0
    masks = dict(zip(table.keys, table.masks, strict=True))  # type: ignore[attr-defined]
    return masks.get((number - 1) * slices + (t - start) // step, 0)


windows = st.lists(
    st.tuples(
        st.integers(0, 2),  # number
        st.sampled_from([0, 3600, 5400, 7200, 86_400]),  # start: on the hour, or not
        st.sampled_from([0, 1800, 3600, 7200, 172_800]),  # length (0: empty)
        st.sampled_from([0, 0, 500, 1]),  # milliseconds after the start's second
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(windows=windows, datetime64=st.booleans(), data=st.data())
def test_a_reply_is_in_the_windows_of_its_number_that_hold_its_time(
    windows: list[tuple[int, int, int, int]], datetime64: bool, data: st.DataObject
) -> None:
    campaigns = [_campaign(i, *w) for i, w in enumerate(windows)]
    numbers = sorted({_number(c) for c in campaigns}, key=lambda n: (n[0], n[1] or ""))
    table = _window_table(campaigns, numbers, datetime64)
    bounds = [(_bound(c.start, datetime64), _bound(c.end, datetime64)) for c in campaigns]
    if all(lo >= hi for lo, hi in bounds):
        assert table is None  # no window holds a reply: compared as before
        return
    if table is None:  # too many entries: compared one by one (test_readers_modern_clickhouse)
        start = min(lo for lo, hi in bounds if lo < hi)
        step = 0
        for lo, hi in bounds:
            if lo < hi:
                step = math.gcd(step, lo - start, hi - start)
        assert sum(max(hi - lo, 0) // step for lo, hi in bounds) > WINDOW_TABLE_ENTRIES
        return
    unit = 1000 if datetime64 else 1
    edges = sorted({b for pair in bounds for b in pair})
    instants = [e + d for e in edges for d in (-1, 0, 1)]
    instants += data.draw(st.lists(st.integers(edges[0] - unit, edges[-1] + unit), max_size=20))
    for j, number in enumerate(numbers, start=1):
        for t in instants:
            at = EPOCH + (timedelta(milliseconds=t) if datetime64 else timedelta(seconds=t))
            expected = sum(
                1 << i
                for i, c in enumerate(campaigns, start=1)
                if _number(c) == number and c.start <= at < c.end
            )
            assert _looked_up(table, j, t) == expected, (number, t)


def test_a_table_too_big_is_not_built() -> None:
    """Windows whose bounds share no long step would need more entries than the
    statement should carry: the windows are then compared one by one."""
    campaigns = [_campaign(0, 0, 0, WINDOW_TABLE_ENTRIES + 1, 0), _campaign(1, 0, 1, 1, 0)]
    numbers = sorted({_number(c) for c in campaigns})
    assert _window_table(campaigns, numbers, datetime64=False) is None
    assert _window_table(campaigns[:1], numbers, datetime64=False) is not None
