"""The table's RocksDB memory, measured (``sms_replies_worker_rocksdb_bytes``).

The worker runs Faust's own rocksdict options (a block cache per table
partition, ``worker_rocksdb_cache_mib``; memtables ``worker_rocksdb_write_buffer_mib``).
A variant that shared one cache per process, held index and filter blocks in it
and charged the memtables to it (a write buffer manager) lost table state in
``tests/integration/test_changelog_end_offsets.py`` (a worker restarted without
its local state: about a quarter of the held parts not found; 3 failures in 12
runs, 0 in 12 without it), so it was taken out; docs/benchmarks.md, Worker memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

#: RocksDB's properties of what one database holds in RAM (bytes), by our name.
MEMORY_PROPERTIES: Final = {
    "memtables": "rocksdb.cur-size-all-mem-tables",
    "table_readers": "rocksdb.estimate-table-readers-mem",
    "block_cache": "rocksdb.block-cache-usage",
    "block_cache_pinned": "rocksdb.block-cache-pinned-usage",
}


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
