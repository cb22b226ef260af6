"""The worker's table survives a SIGKILL on Tansu with multi-record changelog batches.

Tansu reports end offsets too low once a batch holds several records (see
docs/guarantees.md); the worker reads the fetch high watermark instead of
batching one record per request. This loads pending parts fast enough that the
changelog is written in batches of many records, kills the worker, and checks
that every pending part is still there after the restart: with the local
RocksDB state kept (no ConsistencyError) and with it deleted (a full changelog
replay up to the true end).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time

import pytest
from aiokafka import AIOKafkaProducer

from sms_replies.broker.lag import group_lag
from sms_replies.records import Concat, RawPart
from sms_replies.settings import Settings
from tests.integration.conftest import Processes, read_rows, wait_for_rows

pytestmark = pytest.mark.integration

MESSAGES = 400


def part(number: int, part_no: int) -> RawPart:
    return RawPart(
        channel="long_number",
        sender=f"+336{number:08d}",
        recipient="+33756781234",
        text=f"<{number}.{part_no}>",
        provider_message_id=f"m{number}-{part_no}",
        message_type="text",
        received_at_ms=time.time_ns() // 1_000_000,  # recent: not expired by the ticks
        concat=Concat(ref=number % 256, total=2, part=part_no),
    )


async def produce(settings: Settings, parts: list[RawPart]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [
            await producer.send(settings.topics.raw, p.encode(), key=p.partition_key) for p in parts
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_caught_up(settings: Settings, timeout: float = 90) -> None:
    for _ in range(int(timeout * 2)):
        if await group_lag(settings.bootstrap, settings.worker_id, settings.topics.raw) == 0:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError("worker did not catch up")


def assert_bounded_rocksdb(settings: Settings) -> None:
    """Each table partition's RocksDB runs with our memory bounds, not Faust's defaults."""
    options = sorted(settings.worker_state_dir.rglob("OPTIONS-*"))
    assert options, "no RocksDB database under the worker's state directory"
    write_buffer = settings.worker_rocksdb_write_buffer_mib * 1024 * 1024
    for path in options:
        text = path.read_text()
        assert f"write_buffer_size={write_buffer}\n" in text, path
        assert "max_write_buffer_number=2\n" in text, path
        # Index and filter blocks in the (shared) block cache, not beside it (streams.rocksdb).
        assert "cache_index_and_filter_blocks=true\n" in text, path
        assert "pin_l0_filter_and_index_blocks_in_cache=true\n" in text, path


@pytest.mark.timeout(240)
@pytest.mark.parametrize("keep_local_state", [True, False], ids=["rocksdb-kept", "rocksdb-lost"])
async def test_pending_parts_survive_kill_with_batched_changelog(
    settings: Settings, processes: Processes, keep_local_state: bool
) -> None:
    processes.start("worker")
    await produce(settings, [part(n, 1) for n in range(MESSAGES)])
    await wait_caught_up(settings)
    await asyncio.sleep(4)  # past a commit (2.8 s) so the restart starts from committed offsets
    processes.stop("worker", signal.SIGKILL)
    assert_bounded_rocksdb(settings)
    if not keep_local_state:
        shutil.rmtree(settings.data_dir / "worker", ignore_errors=True)
        (settings.data_dir / "worker").mkdir(parents=True)
    processes.start("worker")
    processes.start("sinks")
    await produce(settings, [part(n, 2) for n in range(MESSAGES)])

    await wait_for_rows(settings.duckdb_path, MESSAGES, timeout=150)
    await asyncio.sleep(2)
    rows = read_rows(settings.duckdb_path)
    assert sorted(r["text"] for r in rows) == sorted(f"<{n}.1><{n}.2>" for n in range(MESSAGES))
    assert all(r["complete"] for r in rows)
    assert "ConsistencyError" not in processes.log("worker")
