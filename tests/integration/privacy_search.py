"""Where a phone number may still be: file bytes, decoded stores, every record of every topic.

Helpers of the privacy tests. A number is searched in every format it may be
written in (E.164 with '+', international digits, French national, spaced).
Compressed files (RocksDB blocks, Parquet pages, DuckDB segments) can hide a
string from a byte search, so each store is also read back decoded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import orjson
import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from sms_replies.broker.tansu import end_offsets


def number_forms(e164: str) -> list[bytes]:
    """``+33600000101`` as written anywhere: E.164, digits, national, spaced national."""
    assert e164.startswith("+33")
    assert len(e164) == 12
    national = "0" + e164[3:]
    spaced = " ".join(national[i : i + 2] for i in range(0, 10, 2))
    return [f.encode() for f in (e164, e164[1:], national, spaced)]


def found_in(data: bytes, needles: Iterable[bytes]) -> list[bytes]:
    return [needle for needle in needles if needle in data]


def files_under(root: Path) -> Iterator[Path]:
    return (path for path in sorted(root.rglob("*")) if path.is_file())


def file_hits(root: Path, needles: list[bytes]) -> dict[str, list[bytes]]:
    """Files under ``root`` whose bytes hold a needle."""
    hits: dict[str, list[bytes]] = {}
    for path in files_under(root):
        found = found_in(path.read_bytes(), needles)
        if found:
            hits[str(path.relative_to(root))] = found
    return hits


def decoded_stores(root: Path) -> dict[str, bytes]:
    """Every DuckDB table, Parquet file and RocksDB database under ``root``, decoded as text.

    Run with the processes stopped (DuckDB and RocksDB are locked while in use).
    """
    decoded: dict[str, bytes] = {}
    for path in files_under(root):
        if path.suffix == ".duckdb":
            con = duckdb.connect(str(path), read_only=True)
            try:
                tables = [row[0] for row in con.execute("SHOW TABLES").fetchall()]
                rows = [con.execute(f"SELECT * FROM {t}").fetchall() for t in tables]
            finally:
                con.close()
            decoded[str(path)] = repr(rows).encode()
        elif path.suffix == ".parquet":
            decoded[str(path)] = repr(pq.read_table(path).to_pylist()).encode()
    for current in sorted(root.rglob("CURRENT")):  # a RocksDB database directory
        from rocksdict import AccessType, Rdict

        db = Rdict(str(current.parent), access_type=AccessType.read_only())
        try:
            items = list(db.items())
        finally:
            db.close()
        decoded[str(current.parent)] = repr(items).encode()
    return decoded


def decoded_hits(root: Path, needles: list[bytes]) -> dict[str, list[bytes]]:
    decoded = decoded_stores(root).items()
    return {name: found for name, data in decoded if (found := found_in(data, needles))}


async def topic_records(bootstrap: str, prefix: str) -> dict[str, list[bytes]]:
    """Key, value and headers of every record of every topic whose name starts with ``prefix``
    (the pipeline's topics and Faust's own: changelog, leader topic)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
    finally:
        await admin.close()
    records: dict[str, list[bytes]] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        for name in names:
            partitions = [
                TopicPartition(name, p) for p in sorted(cluster.partitions_for_topic(name) or ())
            ]
            if not partitions:
                continue
            ends = await end_offsets(consumer, partitions)  # assigns them
            await consumer.seek_to_beginning(*partitions)
            values: list[bytes] = []
            async with asyncio.timeout(30):
                while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                    batch = await consumer.getmany(timeout_ms=200)
                    for batch_records in batch.values():
                        for r in batch_records:
                            values.append(
                                orjson.dumps(
                                    [
                                        (r.key or b"").decode("latin-1"),
                                        (r.value or b"").decode("latin-1"),
                                        [(k, v.decode("latin-1")) for k, v in r.headers],
                                    ]
                                )
                            )
            records[name] = values
    finally:
        await consumer.stop()
    return records


async def topic_hits(bootstrap: str, prefix: str, needles: list[bytes]) -> dict[str, int]:
    """Per topic, how many records hold a needle."""
    hits: dict[str, int] = {}
    for name, values in (await topic_records(bootstrap, prefix)).items():
        count = sum(1 for value in values if found_in(value, needles))
        if count:
            hits[name] = count
    return hits
