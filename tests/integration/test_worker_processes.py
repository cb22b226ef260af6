"""Two worker processes in one consumer group share the raw partitions; when one is
SIGKILLed the other takes its partitions over, and every long reply is still stored
exactly once."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sms_replies.broker.embedded import free_port
from sms_replies.broker.partitioner import partition_of
from sms_replies.health import endpoints, worker_name
from sms_replies.ingest.parsing import parse_callback
from sms_replies.settings import Settings
from tests.integration.conftest import Processes, read_rows, wait_for_rows, wait_ready
from tests.integration.test_crash_recovery import post_all

pytestmark = pytest.mark.integration

WORKERS = 2
PARTS = 3


def long_reply(number: int) -> list[dict[str, str]]:
    """The parts of one three-part reply, in the order 3, 1, 2."""
    return [
        {
            "msisdn": f"336{number:08d}",
            "to": "33756781234",
            "messageId": f"m{number}-{part}",
            "concat": "true",
            "concat-ref": str(number % 256),
            "concat-total": str(PARTS),
            "concat-part": str(part),
            "text": f"<{number}.{part}>",
        }
        for part in (3, 1, 2)
    ]


def text_of(number: int) -> str:
    return "".join(f"<{number}.{part}>" for part in range(1, PARTS + 1))


def partitions_of(numbers: range, partitions: int) -> set[int]:
    return {
        partition_of(parse_callback(long_reply(n)[0], 0).partition_key, partitions) for n in numbers
    }


def free_port_run(count: int) -> int:
    """A port p with p .. p + count - 1 all free (worker i listens on base + i)."""
    while True:
        base = free_port()
        try:
            for port in range(base + 1, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base


async def owned(url: str) -> set[int] | None:
    """Raw partitions a worker owns, from its /readyz; None while it is not ready.

    The table is co-partitioned with the raw topic: its table partitions too.
    """
    readyz = url.replace("/healthz", "/readyz")
    try:
        async with aiohttp.ClientSession() as session, session.get(readyz) as response:
            if response.status != 200:
                return None
            body: dict[str, list[int]] = await response.json()
    except aiohttp.ClientError:
        return None
    return set(body["partitions"])


async def wait_for_assignment(
    urls: dict[str, str], partitions: int, timeout: float = 60
) -> dict[str, set[int]]:
    """Each worker's partitions once they are ready and share every partition, none twice."""
    deadline = time.monotonic() + timeout
    seen: dict[str, set[int] | None] = {}
    while time.monotonic() < deadline:
        seen = {name: await owned(url) for name, url in urls.items()}
        shares = [share for share in seen.values() if share is not None]
        if (
            len(shares) == len(urls)
            and sum(map(len, shares)) == partitions
            and set().union(*shares) == set(range(partitions))
        ):
            return {name: share for name, share in seen.items() if share is not None}
        await asyncio.sleep(0.5)
    raise TimeoutError(f"partitions owned {seen}, expected {partitions} shared by {list(urls)}")


async def wait_for_log(processes: Processes, name: str, lines: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(line in processes.log(name) for line in lines):
        assert time.monotonic() < deadline, f"{name}.log lacks some of {sorted(lines)}"
        await asyncio.sleep(0.5)


async def parts_handled(base: str) -> float:
    """Parts of long replies a worker counted, from its Prometheus text."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sms_replies_parts_processed_total" and sample.labels == {
                "result": "part"
            }:
                return sample.value
    return 0.0


def stored(settings: Settings) -> dict[str, int]:
    """Rows per text, and proof that no reply_id is stored twice."""
    rows = read_rows(
        settings.duckdb_path,
        "SELECT text, count(*) AS n, count(DISTINCT reply_id) AS ids, "
        "bool_and(complete AND parts_received = 3) AS whole FROM replies GROUP BY text",
    )
    assert all(r["n"] == r["ids"] for r in rows), rows
    assert all(r["whole"] for r in rows), rows
    return {r["text"]: r["n"] for r in rows}


@pytest.mark.timeout(300)
async def test_two_workers_share_partitions_and_take_over_after_a_kill(
    settings: Settings, processes: Processes
) -> None:
    settings = settings.model_copy(
        update={"worker_processes": WORKERS, "worker_web_port": free_port_run(WORKERS)}
    )
    processes.settings = settings
    urls = endpoints(settings)
    workers = [worker_name(i) for i in range(WORKERS)]
    assert [urls[name] for name in workers] == [
        f"http://127.0.0.1:{settings.worker_web_port + i}/healthz" for i in range(WORKERS)
    ]
    first, second = range(0, 40), range(40, 80)
    # Parts spread over every partition, so that each worker gets some.
    assert partitions_of(first, settings.topic_partitions) == set(range(settings.topic_partitions))
    assert partitions_of(second, settings.topic_partitions) == set(range(settings.topic_partitions))

    for i, name in enumerate(workers):
        processes.start("worker", name, SMS_REPLIES_WORKER_INDEX=str(i))
    processes.start("sinks")
    processes.start("ingest")
    url = f"http://{settings.http_host}:{settings.http_port}/callbacks/smspartner"
    await wait_ready(url.replace("/callbacks/smspartner", "/readyz"))
    for name in workers:
        await wait_ready(urls[name], timeout=60)

    # One group, two members, each the owner of some partitions and none of the same.
    web = {name: urls[name].removesuffix("/healthz") for name in workers}
    owned = await wait_for_assignment({n: urls[n] for n in workers}, settings.topic_partitions)
    assert all(owned.values()), owned
    # Each is consuming its own partitions: it handled their first expiry tick.
    for name in workers:
        indexed = {f"partition {p}: 0 keys indexed" for p in owned[name]}
        await wait_for_log(processes, name, indexed, timeout=30)

    await post_all(url, [p for n in first for p in long_reply(n)])
    await wait_for_rows(settings.duckdb_path, len(first), timeout=90)
    assert stored(settings) == {text_of(n): 1 for n in first}
    async with aiohttp.ClientSession() as session:
        for name in workers:
            async with session.get(urls[name]) as response:
                assert response.status == 200, name
    # Each worker's own /metrics: both handled parts, every part counted once.
    handled = {name: await parts_handled(web[name]) for name in workers}
    assert all(handled.values()), handled
    assert sum(handled.values()) == 3 * len(first), handled

    # Parts 3 and 1 reach both workers; worker-1 is killed while holding its share
    # of them in its table; part 2 of every reply comes after.
    second_parts = [long_reply(n) for n in second]
    await post_all(url, [p for parts in second_parts for p in parts[:2]])
    await asyncio.sleep(4)  # processed and committed (commit interval 2.8 s)
    killed = time.monotonic()
    processes.stop(workers[1], signal.SIGKILL)
    await post_all(url, [parts[2] for parts in second_parts])

    taken = await wait_for_assignment({workers[0]: urls[workers[0]]}, settings.topic_partitions)
    took_over = time.monotonic() - killed
    assert taken == {workers[0]: set(range(settings.topic_partitions))}

    await wait_for_rows(settings.duckdb_path, len(first) + len(second), timeout=90)
    all_stored = time.monotonic() - killed
    await asyncio.sleep(3)  # several sink batches: a late duplicate would show
    assert stored(settings) == {text_of(n): 1 for n in (*first, *second)}
    async with aiohttp.ClientSession() as session, session.get(urls[workers[0]]) as response:
        assert response.status == 200
    print(
        f"after the SIGKILL: partitions taken over in {took_over:.1f}s, "
        f"every reply stored in {all_stored:.1f}s"
    )
