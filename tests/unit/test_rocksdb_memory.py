"""The table's RocksDB keeps index and filter blocks in its block cache (streams.rocksdb)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

from sms_replies.streams.rocksdb import BoundedRocksDBOptions, memory_usage

KEYS = 60_000
FLUSHES = 6


def _fill(db: rocksdict.Rdict) -> None:
    # Several flushed files, each with its index and bloom filter.
    for flush in range(FLUSHES):
        for n in range(KEYS // FLUSHES):
            db[f"key-{flush}-{n:08d}".encode()] = os.urandom(64)
        db.flush()
    for n in range(0, KEYS // FLUSHES, 97):  # reads open the table readers
        db.get(f"key-0-{n:08d}".encode())


def _usage(options: RocksDBOptions, path: Path) -> dict[str, int]:
    db = options.open(path)
    try:
        _fill(db)
        return memory_usage([db])
    finally:
        db.close()


def test_index_and_filter_blocks_are_charged_to_the_block_cache(tmp_path: Path) -> None:
    settings = {"block_cache_size": 16 * 2**20, "write_buffer_size": 4 * 2**20}
    faust_default = _usage(RocksDBOptions(**settings, use_rocksdict=True), tmp_path / "faust")
    bounded = _usage(BoundedRocksDBOptions(**settings, use_rocksdict=True), tmp_path / "bounded")
    # Faust's options: index and filters live in the table readers, outside the cache.
    assert faust_default["table_readers"] > 50_000
    # Ours: the table readers keep their fixed part (about 2 KiB a file), the blocks
    # are in the cache.
    assert bounded["table_readers"] < faust_default["table_readers"] / 4
    assert bounded["block_cache"] > faust_default["block_cache"]
    assert bounded["block_cache"] <= settings["block_cache_size"]


def test_memory_usage_sums_each_property_over_databases(tmp_path: Path) -> None:
    options = BoundedRocksDBOptions(use_rocksdict=True, block_cache_size=2**20)
    first, second = options.open(tmp_path / "a"), options.open(tmp_path / "b")
    try:
        first[b"k"] = b"v" * 1000
        second[b"k"] = b"v" * 1000
        alone = memory_usage([first])
        both = memory_usage([first, second])
    finally:
        first.close()
        second.close()
    assert set(both) == {"memtables", "table_readers", "block_cache", "block_cache_pinned"}
    assert alone["memtables"] > 0
    assert both["memtables"] == 2 * alone["memtables"]


def test_partitions_share_one_cache_charged_for_their_memtables(tmp_path: Path) -> None:
    cache = 8 * 2**20
    options = BoundedRocksDBOptions(
        use_rocksdict=True, block_cache_size=cache, write_buffer_size=8 * 2**20
    )
    first, second = options.open(tmp_path / "p0"), options.open(tmp_path / "p1")
    try:
        for n in range(30_000):  # about 4 MiB of memtable into each partition
            first[f"k{n}".encode()] = os.urandom(100)
            second[f"k{n}".encode()] = os.urandom(100)
        # Flushes run in the background: give them a moment on a busy machine. The
        # write buffer manager asks for one only on a write: a write to each
        # partition per look lets it see what the last ones left above the bound.
        deadline = time.monotonic() + 20
        both = memory_usage([first, second])
        while both["memtables"] > cache // 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            first[b"nudge"] = second[b"nudge"] = b""
            both = memory_usage([first, second])
        one, other = memory_usage([first]), memory_usage([second])
    finally:
        first.close()
        second.close()
    # One cache for both partitions: each reports the whole of it (read a moment
    # apart, while a background flush may still move a few bytes of it).
    assert abs(one["block_cache"] - other["block_cache"]) <= one["block_cache"] // 20
    # The memtables of both are flushed to under half the cache, though each
    # partition's own write buffer (8 MiB) would have held all it was given.
    assert both["memtables"] <= cache // 2
    assert both["block_cache"] <= cache
    assert both["block_cache_pinned"] >= both["memtables"] // 2  # charged to the cache
