"""The reassembly benchmark reads what the ingress writes, and its report is its figures.

Benchmarks are not timed tests: these check that the processors compared do the
same work per callback whether a raw record holds one part or a group of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from benchmarks import quix_peer, reassembly
from benchmarks.common import mixed_load
from benchmarks.report import render_markdown

from sms_replies.records import RawGroup, RawPart, Reply
from sms_replies.streams.reassembly import KeyState, accept

DOCS = Path(__file__).resolve().parents[2] / "docs"


class DictState:
    """quix-streams' ``State`` over a dict, under one key prefix (as ``as_state(prefix)``)."""

    def __init__(self, store: dict[tuple[bytes, str], Any], prefix: bytes) -> None:
        self.store, self.prefix = store, prefix

    def get(self, key: str, default: Any = None) -> Any:
        # A copy, as quix-streams deserialises what it stored.
        value = self.store.get((self.prefix, key))
        return default if value is None else json.loads(json.dumps(value))

    def set(self, key: str, value: Any) -> None:
        self.store[(self.prefix, key)] = json.loads(json.dumps(value))


def _peer_replies(records: list[bytes]) -> list[dict[str, Any]]:
    store: dict[tuple[bytes, str], Any] = {}
    replies = []
    for record in records:
        replies += quix_peer.handle(orjson.loads(record), lambda key: DictState(store, key))
    return replies


def _groups(parts: list[RawPart], size: int) -> list[bytes]:
    """``parts`` as the ingress groups them: records of up to ``size`` parts of one partition."""
    by_partition: dict[int, list[RawPart]] = {}
    for part in parts:
        by_partition.setdefault(hash(part.partition_key) % 8, []).append(part)
    records = []
    for members in by_partition.values():
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            group = RawGroup(tuple(chunk))
            records.append(chunk[0].encode() if len(chunk) == 1 else group.encode())
    return records


def _worker_replies(parts: list[RawPart]) -> list[Reply]:
    state: dict[bytes, KeyState] = {}
    replies: list[Reply] = []
    for part in parts:
        step = accept(state.get(part.partition_key), part)
        if step.pending is None:
            state.pop(part.partition_key, None)
        else:
            state[part.partition_key] = step.pending
        replies += step.replies
    return replies


@pytest.mark.parametrize("size", [1, 3, 64])
def test_quix_peer_gives_the_same_replies_from_groups(size: int) -> None:
    load = mixed_load(400)
    one_per_record = _peer_replies([part.encode() for part in load.parts])
    grouped = _peer_replies(_groups(load.parts, size))
    assert len(one_per_record) == load.messages
    key = "reply_id"
    assert sorted(r[key] for r in grouped) == sorted(r[key] for r in one_per_record)
    # The peer's replies are the worker's (its pure logic, in the same order per key).
    worker = _worker_replies(load.parts)
    assert sorted(r[key] for r in one_per_record) == sorted(r.reply_id for r in worker)
    by_id = {r.reply_id: r for r in worker}
    for reply in grouped:
        assert reply["text"] == by_id[reply[key]].text
        assert reply["keyword"] == by_id[reply[key]].keyword


def test_quix_peer_state_is_the_parts_key_not_the_records() -> None:
    """Two parts of one reply in groups led by other keys still make one reply."""
    load = mixed_load(400)
    long_reply = [p for p in load.parts if p.concat is not None and p.concat.total == 2]
    first = next(p for p in long_reply if p.concat is not None and p.concat.part == 1)
    second = next(
        p for p in long_reply if p.partition_key == first.partition_key and p is not first
    )
    single = next(p for p in load.parts if p.concat is None)
    records = [RawGroup((single, first)).encode(), RawGroup((second, single)).encode()]
    replies = _peer_replies(records)
    assert [r["parts_received"] for r in replies] == [1, 2, 1]


def test_loads_by_name_or_workload() -> None:
    assert reassembly.select_loads(("mixed",)) == ["mixed", "mixed (one per record)"]
    assert reassembly.select_loads(("mixed (one per record)",)) == ["mixed (one per record)"]
    assert reassembly.select_loads(("multipart", "mixed")) == list(reassembly.LOADS)
    with pytest.raises(ValueError, match="unknown loads"):
        reassembly.select_loads(("mixed, one per record",))


def test_benchmarks_md_is_rendered_from_its_figures() -> None:
    saved = json.loads((DOCS / "benchmarks.json").read_text())
    assert (DOCS / "benchmarks.md").read_text() == render_markdown(saved)
