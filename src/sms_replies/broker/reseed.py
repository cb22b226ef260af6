"""Give a fresh embedded broker back the worker's state, from the worker's own files.

The embedded broker keeps everything in memory: after a power cut, a crash of
the broker or a plain restart of ``run``, the reassembly table's changelog is
gone while the worker's RocksDB copies of it survive on disk. Before any worker
starts, :func:`reseed_worker_state`:

1. picks, per table partition, the local copy that applied the most of the old
   changelog (:func:`sms_replies.worker_state.best_copies`; standby copies may lag);
2. produces every entry to the fresh changelog topic, same key, same partition,
   then reads the topic back and checks that every key is there (Tansu's
   ListOffsets is wrong on multi-record batches; this does not rely on it);
3. replaces ``<data_dir>/worker`` by copies built from those entries, each marked
   as having applied the new changelog up to its last offset, so no worker
   meets a persisted offset beyond the end of the new topic (Faust's
   ConsistencyError), and a worker assigned a partition it has no copy of
   restores it from the changelog. The swap is two renames; an interrupted
   swap is finished at the next start, and the old files stay in place until
   the new ones are complete on disk.

Why the changelog and not the raw topic (re-publishing held parts): the table
holds more than parts (tombstones of published and expired replies, late parts,
collisions, the times that drive expiry and the dedup horizon). Copying the
entries restores that state exactly; replaying parts through the reassembly
would recreate some of it differently and re-emit replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from sms_replies.broker.partitioner import partition_of
from sms_replies.broker.tansu import end_offsets
from sms_replies.errors import StateRecoveryError
from sms_replies.files import fsync_directory
from sms_replies.records import RecordDecodeError
from sms_replies.settings import Settings
from sms_replies.streams.reassembly import KeyState
from sms_replies.worker_state import (
    best_copies,
    changelog_topic,
    find_copies,
    partition_path,
    read_items,
    write_partition,
)

log = logging.getLogger(__name__)

#: The read-back gives up after this long without a record (a state of any size).
READ_BACK_STALL_S = 30.0
#: entries of the table, per partition of the new topics
State = dict[int, dict[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Reseeded:
    keys: int
    waiting: int  # long replies waiting for parts
    seconds: float


async def reseed_worker_state(settings: Settings) -> Reseeded:
    """Re-seed the fresh broker at ``settings.bootstrap`` from ``<data_dir>/worker``.

    Raises :class:`StateRecoveryError` (local files untouched) if the broker did
    not take it all.
    """
    started = time.monotonic()
    root = settings.data_dir / "worker"
    state = await asyncio.to_thread(_read_state, root, settings.topic_partitions)
    keys = sum(len(entries) for entries in state.values())
    if not keys:
        await asyncio.to_thread(shutil.rmtree, root, True)
        return Reseeded(0, 0, time.monotonic() - started)
    topic = changelog_topic(settings.worker_id)
    try:
        await _create_topic(settings, topic)
        last = await _produce(settings.bootstrap, topic, state)
        await _check(settings.bootstrap, topic, state, last)
    except KafkaError as exc:
        raise StateRecoveryError(f"cannot re-seed the worker's state: {exc!r}") from None
    await asyncio.to_thread(_replace_local_state, root, state, last, settings.worker_processes)
    waiting = sum(_is_waiting(value) for entries in state.values() for value in entries.values())
    report = Reseeded(keys, waiting, time.monotonic() - started)
    log.info(
        "worker state re-seeded into the fresh broker: %d keys (%d long replies waiting "
        "for parts) in %.1fs",
        report.keys,
        report.waiting,
        report.seconds,
    )
    return report


def _read_state(root: Path, partitions: int) -> State:
    _finish_swap(root)
    state: State = {}
    copies = best_copies(find_copies(root)) if root.is_dir() else {}
    for copy in copies.values():
        for key, value in read_items(copy.path):
            # The partition the ingress gives the key now (the count may have changed).
            state.setdefault(partition_of(key, partitions), {})[key] = value
    return state


def _is_waiting(value: bytes) -> bool:
    try:
        return bool(KeyState.decode(value).parts)
    except RecordDecodeError:
        return False


async def _create_topic(settings: Settings, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        new = NewTopic(
            topic,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.replication_factor,
            topic_configs={"cleanup.policy": "compact"},  # as Faust declares a changelog
        )
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([new])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, state: State) -> dict[int, int]:
    """Every entry to its partition; the offset of each partition's last record."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        ends = await _ends(bootstrap, topic, list(state))
        if any(ends.values()):
            raise StateRecoveryError(
                f"{topic} already holds records: the broker is not fresh, nothing re-seeded"
            )
        last: dict[int, int] = {}
        for partition, entries in state.items():
            futures = [
                await producer.send(topic, value, key=key, partition=partition)
                for key, value in entries.items()
            ]
            results = await asyncio.gather(*futures)
            last[partition] = max(r.offset for r in results)
        return last
    finally:
        await producer.stop()


async def _ends(bootstrap: str, topic: str, partitions: list[int]) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        return {tp.partition: end for tp, end in (await end_offsets(consumer, tps)).items()}
    finally:
        await consumer.stop()


async def _check(bootstrap: str, topic: str, state: State, last: Mapping[int, int]) -> None:
    """Read the topic back: the worker's recovery must find every key, up to ``last``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in state]
        ends = await end_offsets(consumer, tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: dict[int, set[bytes]] = {p: set() for p in state}
        stalled_since = time.monotonic()
        while time.monotonic() - stalled_since < READ_BACK_STALL_S:
            positions = [await consumer.position(tp) for tp in tps]
            if all(at >= ends[tp] for at, tp in zip(positions, tps, strict=True)):
                break
            batches = await consumer.getmany(*tps, timeout_ms=500)
            if batches:
                stalled_since = time.monotonic()
            for tp, records in batches.items():
                seen[tp.partition].update(r.key for r in records if r.key is not None)
    finally:
        await consumer.stop()
    for tp in tps:
        partition = tp.partition
        if ends[tp] != last[partition] + 1 or seen[partition] != set(state[partition]):
            raise StateRecoveryError(
                f"{topic}[{partition}]: {len(seen[partition])} of {len(state[partition])} keys "
                f"read back, end offset {ends[tp]} (last written {last[partition]})"
            )


def _replace_local_state(
    root: Path, state: State, last: Mapping[int, int], worker_processes: int
) -> None:
    staged, replaced = _swap_paths(root)
    shutil.rmtree(staged, ignore_errors=True)
    for partition, entries in state.items():
        if entries:
            worker_dir = staged / str(partition % worker_processes)
            write_partition(partition_path(worker_dir, partition), entries, last[partition])
    staged.mkdir(parents=True, exist_ok=True)
    fsync_directory(root.parent)
    root.rename(replaced)
    staged.rename(root)
    fsync_directory(root.parent)
    shutil.rmtree(replaced)


def _finish_swap(root: Path) -> None:
    """Complete or undo a :func:`_replace_local_state` cut short (crash, power cut)."""
    staged, replaced = _swap_paths(root)
    if not root.exists():
        if staged.exists():  # cut between the two renames: the staged copies are complete
            staged.rename(root)
        elif replaced.exists():
            replaced.rename(root)
    shutil.rmtree(staged, ignore_errors=True)  # cut while building: the old state is intact
    shutil.rmtree(replaced, ignore_errors=True)


def _swap_paths(root: Path) -> tuple[Path, Path]:
    return root.with_name(root.name + ".reseeded"), root.with_name(root.name + ".replaced")
