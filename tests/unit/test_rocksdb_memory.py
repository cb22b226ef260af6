"""The worker's RocksDB memory gauge reads RocksDB's own figures (streams.rocksdb)."""

from __future__ import annotations

from pathlib import Path

from faust.stores.rocksdb import RocksDBOptions

from sms_replies.streams.rocksdb import memory_usage


def test_memory_usage_sums_each_property_over_databases(tmp_path: Path) -> None:
    options = RocksDBOptions(use_rocksdict=True, block_cache_size=2**20)
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
