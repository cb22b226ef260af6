"""The erasure list, and the worker and the sinks consulting it (no broker, real files)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tests.analytics_sample import SAMPLE_REPLIES, write_sample_async
from tests.unit.test_reassembly_handler import HORIZON_MS, TIMEOUT_MS, DictBatch, Event, Message

from sms_replies.analytics.privacy_cli import Stores, apply_policy, years_before
from sms_replies.erasures import KEY_FILE, LIST_FILE, ErasureList, add_erasure, unseen_by
from sms_replies.privacy import pseudonymize, pseudonymize_part
from sms_replies.records import ExpiryTick, RawPart, Reply
from sms_replies.streams.handler import ReassemblyHandler

KEY = b"erasure-test-key"
NUMBER, OTHER = "+33612345678", "+33698765432"


def test_the_list_holds_keyed_hashes_only(tmp_path: Path) -> None:
    entry = add_erasure(tmp_path, NUMBER, KEY)
    assert entry == pseudonymize(NUMBER, KEY)
    assert add_erasure(tmp_path, NUMBER, KEY) == entry  # idempotent
    assert (tmp_path / LIST_FILE).read_text() == entry + "\n"
    assert not (tmp_path / KEY_FILE).exists()  # the pseudonymisation key is the list's key


def test_without_the_key_a_local_key_is_made_and_used(tmp_path: Path) -> None:
    add_erasure(tmp_path, NUMBER, None)
    listed = (tmp_path / LIST_FILE).read_text()
    assert "612345678" not in listed
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o077 == 0
    erasures = ErasureList(tmp_path, None)
    assert erasures.refresh()
    assert erasures.is_erased(NUMBER)  # stores hold the number in clear without a key
    assert not erasures.is_erased(OTHER)


def test_a_process_sees_additions_and_counts_generations(tmp_path: Path) -> None:
    erasures = ErasureList(tmp_path, KEY)
    assert not erasures.refresh()
    assert not erasures.is_erased(NUMBER)
    add_erasure(tmp_path, NUMBER, KEY)
    assert erasures.refresh()
    assert erasures.generation == 1
    assert not erasures.refresh()  # unchanged file: a stat, nothing read
    assert erasures.is_erased(NUMBER)  # rows from before the key: in clear
    assert erasures.is_erased(pseudonymize(NUMBER, KEY))
    assert not erasures.is_erased(pseudonymize(OTHER, KEY))


@dataclasses.dataclass
class Harness:
    batch: DictBatch
    handler: ReassemblyHandler
    replies: list[Reply]

    async def run(self, *values: bytes) -> None:
        await self.handler.handle_batch(self.batch, [Event(v, Message(0)) for v in values])


def harness(data_dir: Path) -> Harness:
    batch = DictBatch()
    replies: list[Reply] = []

    async def publish(reply: Reply) -> None:
        replies.append(reply)

    async def dead_letter(value: bytes, error: str) -> None:
        raise AssertionError(error)

    def scan(event: Any) -> dict[int, list[tuple[bytes, bytes]]]:
        return {event.message.partition: list(batch.table.items())}

    handler = ReassemblyHandler(
        timeout_ms=TIMEOUT_MS,
        horizon_ms=HORIZON_MS,
        publish=publish,
        dead_letter=dead_letter,
        scan_table=scan,
        erasures=ErasureList(data_dir, KEY),
    )
    return Harness(batch, handler, replies)


async def test_the_worker_drops_parts_and_state_of_an_erased_number(
    tmp_path: Path, make_part: Callable[..., RawPart]
) -> None:
    def hashed(**fields: Any) -> RawPart:
        return pseudonymize_part(make_part(**fields), KEY)

    w = harness(tmp_path)
    done = [hashed(part=n, total=2, ref=1, text=t) for n, t in ((1, "secret "), (2, "text"))]
    pending = hashed(part=1, total=2, ref=2, text="held")
    other = hashed(part=1, total=2, ref=3, sender=OTHER, text="kept")
    await w.run(*(p.encode() for p in (*done, pending, other)))
    assert [r.text for r in w.replies] == ["secret text"]
    assert len(w.batch.table) == 3  # a tombstone, two messages waiting
    add_erasure(tmp_path, NUMBER, KEY)
    # A re-sent part of the published reply: dropped, its tombstone with it.
    await w.run(done[0].encode())
    assert [r.text for r in w.replies] == ["secret text"]
    assert done[0].partition_key not in w.batch.table
    # The next tick deletes what is left of the number; the other number's part stays.
    await w.run(ExpiryTick(done[0].received_at_ms + 1).encode())
    assert list(w.batch.table) == [other.partition_key]
    assert (pending.partition_key, None) in w.batch.changelog  # tombstoned in the changelog
    assert w.handler.waiting == {0: 1}
    # A late part of the erased number makes nothing either.
    await w.run(hashed(part=2, total=2, ref=2, text="late").encode())
    assert [r.text for r in w.replies] == ["secret text"]
    assert list(w.batch.table) == [other.partition_key]


async def test_the_sinks_runner_drops_replies_of_an_erased_number(tmp_path: Path) -> None:
    from aiokafka.structs import ConsumerRecord

    from sms_replies.records import Topics
    from sms_replies.sinks.base import Sink
    from sms_replies.sinks.runner import SinkRunner

    class Recording(Sink):
        name = "recording"
        written: list[str] = []

        @classmethod
        def from_settings(cls, settings: Any) -> Recording:
            return cls()

        async def write(self, batch: Sequence[Reply]) -> None:
            self.written.extend(r.reply_id for r in batch)

    runner = SinkRunner(
        Recording(),
        bootstrap="127.0.0.1:1",  # never contacted: no start()
        topics=Topics.with_prefix("t"),
        group="g",
        batch_size=10,
        batch_timeout=0.1,
        dead_letters=None,  # type: ignore[arg-type]
        erasures=ErasureList(tmp_path, KEY),
    )
    committed: list[Any] = []

    async def commit(records: Any) -> None:
        committed.extend(records)

    runner._commit = commit  # type: ignore[method-assign]
    add_erasure(tmp_path, "+33600000001", KEY)
    assert unseen_by(tmp_path, ["recording"]) == []  # never ran here: nothing under way
    ErasureList(tmp_path, KEY).acknowledge("recording")  # as if it ran before the addition
    (tmp_path / LIST_FILE).write_text((tmp_path / LIST_FILE).read_text() + "h:" + "0" * 64 + "\n")
    assert unseen_by(tmp_path, ["recording"]) == ["recording"]
    replies = [
        dataclasses.replace(r, sender=pseudonymize(r.sender, KEY)) for r in SAMPLE_REPLIES[:4]
    ]
    records = [
        ConsumerRecord("t.replies", 0, n, 0, 0, None, r.encode(), None, 0, 0, [])
        for n, r in enumerate(replies)
    ]
    try:
        runner._read_erasures()  # the run loop does so between two writes
        assert unseen_by(tmp_path, ["recording"]) == []
        await runner._deliver(records)
    finally:
        await runner._consumer.stop()
    assert Recording.written == ["r2", "r4"]  # r1 and r3 are +33600000001's
    assert len(committed) == 4  # dropped replies are consumed all the same


def test_years_before_handles_29_february() -> None:
    assert years_before(datetime.fromisoformat("2028-02-29T10:00Z"), 3) == datetime.fromisoformat(
        "2025-02-28T10:00Z"
    )


async def test_cnil_policy_on_duckdb_and_parquet(tmp_path: Path) -> None:
    from sms_replies.sinks.parquet import ParquetSink

    db = tmp_path / "replies.duckdb"
    await write_sample_async(db)
    sink = ParquetSink(tmp_path / "parquet")
    await sink.setup()
    await sink.write(SAMPLE_REPLIES)
    last: dict[str, int] = {}
    for reply in SAMPLE_REPLIES:
        last[reply.sender] = max(reply.received_at_ms, last.get(reply.sender, 0))
    now = datetime.fromisoformat("2028-03-30T10:00Z")
    cutoff_ms = int(years_before(now, 3).timestamp() * 1000)
    silent = {s for s, at in last.items() if at < cutoff_ms}
    assert silent
    assert len(silent) < len(last)
    expected = sum(1 for r in SAMPLE_REPLIES if r.sender in silent)
    stores = Stores(duckdb_path=db, parquet_dir=tmp_path / "parquet")
    assert await apply_policy(stores, "cnil", now=now) == {"duckdb": expected, "parquet": expected}
    assert await apply_policy(stores, "cnil", now=now) == {"duckdb": 0, "parquet": 0}
    with pytest.raises(ValueError, match="unknown"):
        await apply_policy(stores, "forever", now=now)
