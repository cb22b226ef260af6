"""Issue 14's "done means", through `make run`-style processes, read with the real CLI.

One pipeline for the whole module: ``sms-replies worker``, ``ingest`` and two
``sinks`` processes (DuckDB + PostgreSQL + webhook in one, ClickHouse 18.16 in the
other) on the session's embedded broker, with topics, group ids, a PostgreSQL
schema and a ClickHouse database of their own, and a webhook receiver on a
local port. Callbacks go over HTTP in both shapes (long number: form, JSON and
GET; short number: JSON), some through a per-campaign URL (``?campaign=spring-A``):

- A: "STOP merci…" (a long reply, its part 2 sent last), then "Start" (short
  number), then "Oui": received in that order, stored STOP after START.
- B: "STOP". C: a short-number ``type: stop``.
- D: "Start…" (a long reply, its part 2 sent last), then "Stop.": stored START
  after the STOP.

The ClickHouse sinks process is stopped after B's reply and started again at the
end: it stores the rest in one go, the others one by one. Whatever the order,
`optouts list` gives B, C and D opted out (A opted back in: "Oui" is not a
re-subscribe keyword, docs/schema.md) in every store; the tests then check the
campaign column, ``provider_sent_at`` and what the webhook receiver got.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import psycopg
import pytest
from clickhouse_driver import Client

from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import EmbeddedBroker, free_port
from sms_replies.settings import Settings
from tests.clickhouse_server import LocalServer, clickhouse_server_binary, local_clickhouse_server
from tests.integration.conftest import Processes, read_rows, wait_ready
from tests.integration.webhook_receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "whsec-operators-0123456789"
RECIPIENT = "33756781234"

A, B, C, D = "+33612000001", "+33612000002", "+33612000003", "+33612000004"
NATIONAL = {A: "06 12 00 00 01", D: "06.12.00.00.04"}  # as an operator types them
NEVER_SEEN = "0612000009"
STORES = ("duckdb", "postgresql", "clickhouse")

Shape = Literal["form", "json", "get"]


# -- the callbacks ----------------------------------------------------------------------


@dataclass(frozen=True)
class Callback:
    """One HTTP request of the provider: its fields, how it is sent, to which URL."""

    fields: dict[str, Any]
    shape: Shape
    campaign: str | None = None


def long_number(
    sender: str,
    message_id: str,
    text: str,
    timestamp: str,
    *,
    shape: Shape,
    campaign: str | None = None,
    part: tuple[int, int, int] | None = None,  # (concat-ref, concat-total, concat-part)
) -> Callback:
    fields = {
        "msisdn": sender.removeprefix("+"),
        "to": RECIPIENT,
        "messageId": message_id,
        "text": text,
        "type": "text",
        "message-timestamp": timestamp,
    }
    if part is not None:
        ref, total, number = part
        fields |= {
            "concat": "true",
            "concat-ref": str(ref),
            "concat-total": str(total),
            "concat-part": str(number),
        }
    return Callback(fields, shape, campaign)


def short_number(sender: str, kind: Literal["response", "stop"], text: str, id_: int) -> Callback:
    fields = {"type": kind, "phone_number": sender, "text": text, "message_id": id_}
    return Callback(fields, "json")


# In the order they are sent; the pipeline is waited for at each "then".
B_STOP = long_number(B, "op-b1", "STOP", "2026-12-01 09:00:00", shape="json", campaign="spring-A")
A_STOP_1 = long_number(
    A, "op-a1", "STOP merci, ne m'écrivez ", "2026-12-01 09:01:00", shape="form",
    campaign="spring-A", part=(7, 2, 1),
)  # fmt: skip
D_START_1 = long_number(
    D, "op-d1", "Start: je veux encore ", "2026-12-01 09:01:05", shape="get", part=(9, 2, 1)
)
A_START = short_number(A, "response", "Start", 101)
D_STOP = long_number(D, "op-d2", "Stop.", "2026-12-01 09:02:00", shape="form")
A_STOP_2 = long_number(
    A, "op-a2", "plus jamais.", "2026-12-01 09:01:01", shape="form",
    campaign="spring-A", part=(7, 2, 2),
)  # fmt: skip
D_START_2 = long_number(
    D, "op-d3", "vos offres", "2026-12-01 09:01:06", shape="get", part=(9, 2, 2)
)
C_STOP = short_number(C, "stop", "", 102)
A_OUI = long_number(A, "op-a3", "Oui", "2026-12-01 09:03:00", shape="get", campaign="spring-A")

STEPS: list[list[Callback]] = [
    [B_STOP],  # then the ClickHouse sinks process is stopped
    [A_STOP_1, D_START_1, A_START, D_STOP],  # stored: A's START, D's STOP
    [A_STOP_2, D_START_2],  # stored: A's STOP, D's START, each older than what is stored
    [C_STOP, A_OUI],
]
STORED_AFTER = [1, 3, 5, 7]  # replies in the stores after each step

# What each stored reply must be, by (sender, text).
A_STOP_TEXT = "STOP merci, ne m'écrivez plus jamais."
D_START_TEXT = "Start: je veux encore vos offres"
EXPECTED_ROWS: dict[tuple[str, str], tuple[str | None, datetime | None]] = {
    # (campaign, provider_sent_at)
    (B, "STOP"): ("spring-A", datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)),
    (A, A_STOP_TEXT): ("spring-A", datetime(2026, 12, 1, 9, 1, 0, tzinfo=UTC)),
    (A, "Start"): (None, None),  # short number: no message-timestamp
    (A, "Oui"): ("spring-A", datetime(2026, 12, 1, 9, 3, 0, tzinfo=UTC)),
    (D, D_START_TEXT): (None, datetime(2026, 12, 1, 9, 1, 5, tzinfo=UTC)),
    (D, "Stop."): (None, datetime(2026, 12, 1, 9, 2, 0, tzinfo=UTC)),
    (C, ""): (None, None),
}
# The opt-out list: sender -> (status, source, text of the deciding reply).
EXPECTED_DECISIONS = {
    A: ("opted_in", "keyword", "Start"),
    B: ("opted_out", "text", "STOP"),
    C: ("opted_out", "provider", ""),
    D: ("opted_out", "text", "Stop."),
}


async def send(session: aiohttp.ClientSession, url: str, callback: Callback) -> None:
    params = {"campaign": callback.campaign} if callback.campaign else {}
    if callback.shape == "get":
        request = session.get(url, params={**params, **callback.fields})
    elif callback.shape == "json":
        request = session.post(url, params=params, json=callback.fields)
    else:
        request = session.post(url, params=params, data=callback.fields)
    async with request as response:
        assert response.status == 200, await response.text()


# -- the stores, each read with its own driver ------------------------------------------


@dataclass(frozen=True)
class Stores:
    duckdb_path: Path
    pg_schema: str
    clickhouse: LocalServer
    ch_database: str

    def urls(self) -> dict[str, str]:
        """``--store`` as a user types it for each."""
        ch = self.clickhouse
        return {
            "duckdb": str(self.duckdb_path),
            "postgresql": f"{PG_DSN}?schema={self.pg_schema}",
            "clickhouse": f"clickhouse://{ch.host}:{ch.port}/{self.ch_database}",
        }

    def replies(self, store: str) -> list[dict[str, Any]]:
        """Every stored reply: the columns these tests look at, times as aware UTC."""
        columns = "reply_id, sender, text, campaign, provider_sent_at, received_at, ingested_at"
        if store == "duckdb":
            if not self.duckdb_path.exists():
                return []
            rows = read_rows(self.duckdb_path, f"SELECT {columns} FROM replies")
        elif store == "postgresql":
            rows = self._postgres(f'SELECT {columns} FROM "{self.pg_schema}".replies')
        else:
            rows = self._clickhouse(f"SELECT {columns} FROM `{self.ch_database}`.replies FINAL")
        return [{k: _utc(v) for k, v in row.items()} for row in rows]

    def _postgres(self, sql: str) -> list[dict[str, Any]]:
        with psycopg.connect(PG_DSN) as con:
            exists = con.execute("SELECT to_regclass(%s)", (f'"{self.pg_schema}".replies',))
            if (found := exists.fetchone()) is None or found[0] is None:
                return []
            cursor = con.execute(sql)
            names = [d.name for d in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _clickhouse(self, sql: str) -> list[dict[str, Any]]:
        client = Client(self.clickhouse.host, port=self.clickhouse.port)
        try:
            found = client.execute(
                "SELECT count() FROM system.tables WHERE database = %(db)s AND name = 'replies'",
                {"db": self.ch_database},
            )
            if not found[0][0]:
                return []
            rows, names = client.execute(sql, with_column_types=True)
            return [dict(zip([n for n, _ in names], row, strict=True)) for row in rows]
        finally:
            client.disconnect()

    def drop(self) -> None:
        with psycopg.connect(PG_DSN, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{self.pg_schema}" CASCADE')
        client = Client(self.clickhouse.host, port=self.clickhouse.port)
        try:
            client.execute(f"DROP DATABASE IF EXISTS `{self.ch_database}`")
        finally:
            client.disconnect()


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


async def wait_stored(
    stores: Stores, names: tuple[str, ...], count: int, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        counts = {name: len(stores.replies(name)) for name in names}
        if all(n >= count for n in counts.values()):
            assert set(counts.values()) == {count}, counts  # never more than sent
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"expected {count} replies, stored: {counts}")
        await asyncio.sleep(0.2)


async def wait_delivered(receiver: Receiver, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(receiver.stored) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(receiver.stored)} of {count} replies reached the receiver")
        await asyncio.sleep(0.1)


# -- the pipeline, once for the module -------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    stores: Stores
    receiver: Receiver
    processes: Processes


@pytest.fixture(scope="module")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    if clickhouse_server_binary() is None:
        pytest.skip("clickhouse-server is not installed (`make test` installs it)")
    with local_clickhouse_server(tmp_path_factory.mktemp("clickhouse-operators")) as server:
        yield server


@pytest.fixture(scope="module")
def pipeline(
    broker: EmbeddedBroker,
    clickhouse_server: LocalServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    run_id = uuid.uuid4().hex[:8]
    work = tmp_path_factory.mktemp("operators")
    settings = Settings.load(
        kafka_bootstrap=broker.bootstrap,
        kafka_embedded=True,
        topic_prefix=f"test-operators-{run_id}",
        worker_id=f"test-operators-{run_id}-reassembly",
        topic_partitions=4,
        http_port=free_port(),
        worker_web_port=free_port(),
        sinks_web_port=free_port(),
        data_dir=work / "data",
        sink_batch_timeout=0.2,
        publish_timeout=3.0,
        sinks=["duckdb", "postgres", "webhook"],
    )
    stores = Stores(
        duckdb_path=settings.duckdb_path,
        pg_schema=f"operators_{run_id}",
        clickhouse=clickhouse_server,
        ch_database=f"operators_{run_id}",
    )
    receiver = Receiver(SECRET.encode(), path="/hooks/replies")
    receiver.start()
    processes = Processes(settings, work)
    try:
        asyncio.run(_run_scenario(settings, stores, receiver, processes))
        yield Pipeline(stores, receiver, processes)
    finally:
        processes.stop_all()
        receiver.stop()
        stores.drop()


async def _run_scenario(
    settings: Settings, stores: Stores, receiver: Receiver, processes: Processes
) -> None:
    await ensure_topics(settings.bootstrap, settings.topics, partitions=settings.topic_partitions)
    sinks_env = {
        "SMS_REPLIES_POSTGRES_DSN": PG_DSN,
        "SMS_REPLIES_POSTGRES_SCHEMA_NAME": stores.pg_schema,
        "SMS_REPLIES_WEBHOOK_URL": receiver.url,
        "SMS_REPLIES_WEBHOOK_SECRET": SECRET,
    }
    clickhouse_env = {
        "SMS_REPLIES_SINKS": "clickhouse",
        "SMS_REPLIES_SINKS_WEB_PORT": str(free_port()),
        "SMS_REPLIES_CLICKHOUSE_HOST": stores.clickhouse.host,
        "SMS_REPLIES_CLICKHOUSE_PORT": str(stores.clickhouse.port),
        "SMS_REPLIES_CLICKHOUSE_DATABASE": stores.ch_database,
    }
    processes.start("worker")
    processes.start("sinks", **sinks_env)
    processes.start("sinks", name="sinks-clickhouse", **clickhouse_env)
    processes.start("ingest")
    base = f"http://{settings.http_host}:{settings.http_port}"
    await wait_ready(f"{base}/readyz", timeout=90)
    url = f"{base}/callbacks/smspartner"
    others = ("duckdb", "postgresql")
    async with aiohttp.ClientSession() as session:
        for step, (callbacks, stored) in enumerate(zip(STEPS, STORED_AFTER, strict=True)):
            for callback in callbacks:
                await send(session, url, callback)
            await wait_stored(stores, STORES if step == 0 else others, stored)
            if step == 0:
                processes.stop("sinks-clickhouse")
    processes.start("sinks", name="sinks-clickhouse", **clickhouse_env)
    await wait_stored(stores, STORES, len(EXPECTED_ROWS))
    await wait_delivered(receiver, len(EXPECTED_ROWS))


# -- the real CLI ----------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``sms-replies ARGS`` in a process of its own, as a new user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_REPLIES_")}
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
    return subprocess.run(
        [sys.executable, "-m", "sms_replies", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def cli_json(*args: str) -> Any:
    result = cli(*args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def each_store(pipeline: Pipeline, run: Callable[[str], Any]) -> dict[str, Any]:
    return {name: run(url) for name, url in pipeline.stores.urls().items()}


def by_sender_and_text(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    keyed = {(row["sender"], row["text"]): row for row in rows}
    assert len(keyed) == len(rows)
    return keyed


# -- the tests ---------------------------------------------------------------------------


def test_replies_were_stored_out_of_their_decision_order(pipeline: Pipeline) -> None:
    """So that the opt-out list being right means something: DuckDB and PostgreSQL
    stored each later decision first; ClickHouse (stopped meanwhile) stored the six
    replies after B's only once the others had them all."""
    duck = by_sender_and_text(pipeline.stores.replies("duckdb"))
    for older, newer in (((A, A_STOP_TEXT), (A, "Start")), ((D, D_START_TEXT), (D, "Stop."))):
        assert duck[older]["received_at"] < duck[newer]["received_at"]
        for store in ("duckdb", "postgresql"):
            rows = by_sender_and_text(pipeline.stores.replies(store))
            assert rows[older]["ingested_at"] > rows[newer]["ingested_at"], store
    assert duck[A, "Start"]["received_at"] < duck[A, "Oui"]["received_at"]
    last_elsewhere = max(row["ingested_at"] for row in duck.values()).replace(microsecond=0)
    ch = by_sender_and_text(pipeline.stores.replies("clickhouse"))
    assert ch[B, "STOP"]["ingested_at"] <= duck[A, "Start"]["ingested_at"]
    assert all(row["ingested_at"] >= last_elsewhere for key, row in ch.items() if key[0] != B)


def whole_seconds(when: datetime) -> datetime:
    """ClickHouse 18.16 has no DateTime64: its times are whole seconds (docs/schema.md)."""
    return when.replace(microsecond=0)


def test_optouts_list_is_exactly_the_expected_set_in_every_store(pipeline: Pipeline) -> None:
    listed = each_store(pipeline, lambda url: cli_json("optouts", "list", "--store", url))
    everyone = each_store(
        pipeline, lambda url: cli_json("optouts", "list", "--all", "--store", url)
    )
    for store in STORES:
        assert {o["sender"] for o in listed[store]["optouts"]} == {B, C, D}, store
        assert listed[store]["count"] == 3
        rows = by_sender_and_text(pipeline.stores.replies(store))
        decisions = {
            o["sender"]: (o["status"], o["source"], o["reply_id"], o["since"])
            for o in everyone[store]["optouts"]
        }
        assert {
            sender: (status, source, reply_id, datetime.fromisoformat(since))
            for sender, (status, source, reply_id, since) in decisions.items()
        } == {
            sender: (
                status,
                source,
                rows[sender, text]["reply_id"],
                rows[sender, text]["received_at"],
            )
            for sender, (status, source, text) in EXPECTED_DECISIONS.items()
        }, store
    # The same list in every store, but for ClickHouse's whole seconds.
    assert listed["postgresql"] == listed["duckdb"]
    assert seconds_only(listed["clickhouse"]) == seconds_only(listed["duckdb"])


def seconds_only(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A listing by sender, ``since`` in whole seconds."""
    return {
        o["sender"]: {**o, "since": whole_seconds(datetime.fromisoformat(o["since"]))}
        for o in listing["optouts"]
    }


@pytest.mark.parametrize("store", STORES)
def test_optouts_check_takes_a_national_number(pipeline: Pipeline, store: str) -> None:
    url = pipeline.stores.urls()[store]
    d = cli_json("optouts", "check", "--phone", NATIONAL[D], "--store", url)
    assert (d["phone"], d["opted_out"], d["decision"]["status"]) == (D, True, "opted_out")
    a = cli_json("optouts", "check", "--phone", NATIONAL[A], "--store", url)
    assert (a["phone"], a["opted_out"], a["decision"]["status"]) == (A, False, "opted_in")
    unknown = cli_json("optouts", "check", "--phone", NEVER_SEEN, "--store", url)
    assert (unknown["opted_out"], unknown["decision"]) == (False, None)


def test_optouts_check_answers_a_new_user_in_words(pipeline: Pipeline) -> None:
    url = pipeline.stores.urls()["duckdb"]
    result = cli("optouts", "check", "--phone", NATIONAL[D], "--store", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{D}: OPTED OUT since ")


@pytest.mark.parametrize("store", STORES)
def test_campaign_and_provider_time_from_the_callbacks(pipeline: Pipeline, store: str) -> None:
    rows = by_sender_and_text(pipeline.stores.replies(store))
    got = {key: (row["campaign"], row["provider_sent_at"]) for key, row in rows.items()}
    assert got == EXPECTED_ROWS
    assert sum(1 for campaign, _ in got.values() if campaign == "spring-A") == 3


def test_the_webhook_receiver_got_every_reply_once_signed(pipeline: Pipeline) -> None:
    receiver = pipeline.receiver
    rows = by_sender_and_text(pipeline.stores.replies("duckdb"))
    accepted = [d for d in receiver.deliveries if d.status == 200]
    assert receiver.deliveries
    assert all(d.signature_ok for d in receiver.deliveries)
    assert all(d.key for d in accepted)
    delivered = Counter(reply_id for d in accepted for reply_id in d.reply_ids)
    assert delivered == Counter(row["reply_id"] for row in rows.values())  # each once
    for (sender, text), row in rows.items():
        item = receiver.stored[row["reply_id"]]
        assert (item["sender"], item["text"], item["campaign"]) == (sender, text, row["campaign"])
        sent_at = row["provider_sent_at"]
        assert item["provider_sent_at"] == (sent_at and sent_at.isoformat().replace("+00:00", "Z"))
