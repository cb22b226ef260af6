"""The Parquet sink against the sink kit, on real files in tmp_path."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from sms_replies.settings import Settings
from sms_replies.sinks.parquet import PART_GLOB, ParquetSink, view_sql
from sms_replies.sinks.testing import ReadBack, SinkConformance, make_replies, make_reply

pytestmark = pytest.mark.integration


def read_view(directory: Path) -> list[dict[str, Any]]:
    """Rows through the documented read interface (the DuckDB view)."""
    if not any(directory.glob(PART_GLOB)):
        return []
    con = duckdb.connect()
    try:
        con.execute(view_sql(directory))
        cursor = con.execute("SELECT * FROM replies")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def raw_reply_ids(directory: Path) -> list[str]:
    """Every reply_id in the files, repeats included (no view)."""
    return [
        reply_id
        for path in directory.glob(PART_GLOB)
        for reply_id in pq.read_table(path, columns=["reply_id"]).column(0).to_pylist()
    ]


class TestParquetSinkContract(SinkConformance):
    @pytest.fixture
    def sink(self, sink_settings: Settings) -> ParquetSink:
        return ParquetSink.from_settings(sink_settings)

    @pytest.fixture
    def read_back(self, sink: ParquetSink) -> ReadBack:
        async def rows() -> list[dict[str, Any]]:
            return read_view(sink.directory)

        return rows

    @pytest.fixture
    def broken_sink(self, tmp_path: Path) -> ParquetSink:
        # The directory's path is taken by a file: what an unmounted volume looks like.
        blocked = tmp_path / "not-a-directory"
        blocked.write_text("")
        return ParquetSink(blocked / "parquet")


async def test_files_hold_one_row_per_reply_across_restarts(tmp_path: Path) -> None:
    batch = make_replies(300, days=3)
    async with ParquetSink(tmp_path) as sink:
        await sink.write(batch[:200])
        await sink.write(batch[100:])
    async with ParquetSink(tmp_path) as restarted:  # no cache: must read the files
        await restarted.write(batch)
    ids = raw_reply_ids(tmp_path)
    assert len(ids) == 300
    assert set(ids) == {r.reply_id for r in batch}


async def test_layout_is_one_directory_per_day_of_received_at(tmp_path: Path) -> None:
    async with ParquetSink(tmp_path) as sink:
        await sink.write([make_reply(1, day=0), make_reply(2, day=1), make_reply(3, day=1)])
    assert_layout(tmp_path)


def assert_layout(root: Path) -> None:
    days = sorted(p.name for p in root.iterdir())
    assert days == ["date=2023-11-14", "date=2023-11-15"]
    assert [len(list((root / d).glob("part-*.parquet"))) for d in days] == [1, 1]
    assert not list(root.glob("date=*/.*"))  # no temporary file left behind


async def test_setup_removes_only_stale_temporary_files(tmp_path: Path) -> None:
    folder = tmp_path / "date=2023-11-14"
    folder.mkdir()
    stale, fresh = folder / ".part-old.parquet.tmp", folder / ".part-new.parquet.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    async with ParquetSink(tmp_path):
        pass
    assert not stale.exists()
    assert fresh.exists()
    assert read_view(tmp_path) == []  # temporary files are never read


async def test_index_held_in_memory_is_bounded_and_replays_stay_idempotent(
    tmp_path: Path,
) -> None:
    """Issue 10 item 8: the index of stored reply_ids no longer grows with every reply."""
    directory = tmp_path / "parquet"
    bound = 120
    # Twelve batches of 50, each on its own day (600 ids, five times the bound).
    batches = [[make_reply(50 * n + i, day=n) for i in range(50)] for n in range(12)]
    async with ParquetSink(directory, index_max_ids=bound) as sink:
        for batch in batches:
            await sink.write(batch)
            assert sink.indexed_ids <= bound
        assert len(sink.indexed_days) < len(batches)
        # A replay of every batch, oldest days first (their index was dropped):
        for batch in batches:
            await sink.write(batch)
            assert sink.indexed_ids <= bound
    # A day larger than the bound on its own, and its replay by a new process.
    big_day = [make_reply(10_000 + n, day=40) for n in range(300)]
    for _ in range(2):
        async with ParquetSink(directory, index_max_ids=bound) as sink:
            for start in range(0, 300, 100):
                await sink.write(big_day[start : start + 100])
                assert sink.indexed_ids <= bound
            await sink.write(big_day)
            assert sink.indexed_ids <= bound
    ids = raw_reply_ids(directory)
    assert len(ids) == len(set(ids)) == 600 + 300
