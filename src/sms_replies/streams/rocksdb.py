"""The table's RocksDB: every byte it holds in RAM under one bound, and measured.

Faust's rocksdict options give each table partition its own block cache and
keep each SST file's index and bloom-filter blocks outside it, in the table
reader, for as long as the file is open (Faust opens up to 943,719 files):
memory that grows with the files. Here one block cache serves every partition
of the process, holds the index and filter blocks (level-0 ones pinned: every
get reads them), and is charged for the memtables (a write buffer manager
flushes when they pass half of it): the worker's RocksDB memory stays under
``worker_rocksdb_cache_mib`` whatever the length of the run (docs/benchmarks.md,
Worker memory). :func:`memory_usage` reads RocksDB's own figures for the gauge
the worker exports (``sms_replies_worker_rocksdb_bytes``).

These options were taken out once (772a036) for a loss of table state after a
restart without local state. The restored table was complete in every failure
reproduced since: raw records were what went missing, skipped by Faust's
consumer at the end of the recovery (:mod:`.holes`); these options changed only
how often that race was lost (3 in 22 runs, against 0 in 8 with Faust's).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

import rocksdict
from faust.stores.rocksdb import RocksDBOptions
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

#: RocksDB's properties of what one database holds in RAM (bytes), by our name.
MEMORY_PROPERTIES: Final = {
    "memtables": "rocksdb.cur-size-all-mem-tables",
    "table_readers": "rocksdb.estimate-table-readers-mem",
    "block_cache": "rocksdb.block-cache-usage",
    "block_cache_pinned": "rocksdb.block-cache-pinned-usage",
}


class BoundedRocksDBOptions(RocksDBOptions):
    """Faust's options, with every partition's blocks and memtables in one shared cache."""

    _cache: Any = None
    _write_buffers: Any = None

    def as_options(self) -> Any:
        if not self.use_rocksdict:  # python-rocksdb: not installed here, Faust's own
            return super().as_options()
        if self._cache is None:  # one per store: each partition's database shares it
            self._cache = rocksdict.Cache(self.block_cache_size)
            self._write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
                self.block_cache_size // 2, False, self._cache
            )
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        if self.max_open_files is not None:
            options.set_max_open_files(self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_write_buffer_manager(self._write_buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(self._cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
        return options


def bound_store(store: Any) -> None:
    """Give a Faust RocksDB store :class:`BoundedRocksDBOptions` (before it opens a partition)."""
    current: RocksDBOptions = store.rocksdb_options
    store.rocksdb_options = BoundedRocksDBOptions(
        max_open_files=current.max_open_files,
        write_buffer_size=current.write_buffer_size,
        max_write_buffer_number=current.max_write_buffer_number,
        target_file_size_base=current.target_file_size_base,
        block_cache_size=current.block_cache_size,
        block_cache_compressed_size=current.block_cache_compressed_size,
        bloom_filter_size=current.bloom_filter_size,
        use_rocksdict=current.use_rocksdict,
        **current.extra_options,
    )


def memory_usage(databases: Iterable[Any]) -> dict[str, int]:
    """Bytes held by ``databases`` (open rocksdict ``Rdict``), per property.

    Summed over the databases, except the block cache's figures: every database
    reports the same shared cache, counted once (the largest report).
    """
    totals = dict.fromkeys(MEMORY_PROPERTIES, 0)
    for db in databases:
        for name, prop in MEMORY_PROPERTIES.items():
            value = db.property_int_value(prop)
            if value is None:
                continue
            if name.startswith("block_cache"):
                totals[name] = max(totals[name], int(value))
            else:
                totals[name] += int(value)
    return totals


class RocksDBMemoryCollector(Collector):
    """``sms_replies_worker_rocksdb_bytes{kind}`` over the store's open partitions, on scrape."""

    def __init__(self, store: Any = None) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "sms_replies_worker_rocksdb_bytes",
            "RAM held by the table's RocksDB in this worker, by kind (RocksDB properties).",
            labels=["kind"],
        )
        databases = list(getattr(self._store, "_dbs", {}).values())
        for kind, value in memory_usage(databases).items():
            gauge.add_metric([kind], value)
        yield gauge


_COLLECTOR = RocksDBMemoryCollector()


def export_memory(store: Any) -> None:
    """Export ``store``'s RocksDB memory in this process's metrics (the latest store wins)."""
    if _COLLECTOR._store is None:
        REGISTRY.register(_COLLECTOR)
    _COLLECTOR._store = store
