"""Callbacks grouped per partition into raw records (sms_replies.grouping): no broker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_replies.grouping import PartitionGroups
from sms_replies.records import RawGroup, RawPart, decode_raw


def part(n: int, text: str = "Oui") -> RawPart:
    return RawPart("long_number", f"+336{n:08d}", None, text, f"id{n}", "text", 1_700_000_000_000)


def test_one_part_travels_as_a_plain_part_record_with_its_key() -> None:
    groups: PartitionGroups[str] = PartitionGroups(max_bytes=10_000)
    groups.add(3, b"k", part(1).encode(), "w1")
    [record] = groups.drain()
    assert (record.partition, record.key, record.value, record.waiters) == (
        3,
        b"k",
        part(1).encode(),
        ["w1"],
    )
    assert groups.drain() == []


def test_parts_of_one_partition_make_one_group_in_the_order_they_came() -> None:
    groups: PartitionGroups[int] = PartitionGroups(max_bytes=10_000)
    for n, partition in enumerate([0, 1, 0, 0, 1]):
        groups.add(partition, b"key%d" % n, part(n).encode(), n)
    assert len(groups) == 5
    records = groups.drain()
    assert [(r.partition, r.key, r.waiters) for r in records] == [
        (0, b"key0", [0, 2, 3]),
        (1, b"key1", [1, 4]),
    ]
    assert decode_raw(records[0].value) == RawGroup((part(0), part(2), part(3)))
    assert len(groups) == 0


@given(
    texts=st.lists(st.text(max_size=300), min_size=1, max_size=40),
    max_bytes=st.integers(600, 5_000),
    max_parts=st.integers(1, 7),
)
def test_records_stay_within_their_bounds_and_keep_every_part_once(
    texts: list[str], max_bytes: int, max_parts: int
) -> None:
    parts = [part(n, text) for n, text in enumerate(texts)]
    groups: PartitionGroups[int] = PartitionGroups(max_bytes, max_parts)
    for n, p in enumerate(parts):
        groups.add(n % 2, p.partition_key, p.encode(), n)
    records = groups.drain()
    seen = []
    for record in records:
        decoded = decode_raw(record.value)
        carried = decoded.parts if isinstance(decoded, RawGroup) else (decoded,)
        assert [parts[w] for w in record.waiters] == list(carried)
        assert len(carried) <= max_parts
        # Only a part alone may be larger than the bound (the worker's bounds keep it under).
        assert len(carried) == 1 or len(record.value) <= max_bytes
        assert {w % 2 for w in record.waiters} == {record.partition}
        seen += record.waiters
    assert sorted(seen) == list(range(len(parts)))


def test_at_least_one_part_a_record() -> None:
    with pytest.raises(ValueError, match="max_parts"):
        PartitionGroups(1000, max_parts=0)
