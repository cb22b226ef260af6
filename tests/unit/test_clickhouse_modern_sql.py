"""The ClickHouse sink's SQL on a current engine (chdb: ClickHouse in-process).

The integration suite runs the sink on Debian's clickhouse-server 18.16. This
checks what only a current server does: feature detection, the DDL with
DateTime64 and the deduplication window, the insert token, migration and the
FINAL read. chdb has no native-protocol client, so the driver's path
(external tables, columnar inserts) is not exercised here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from sms_replies.optout import Decision, version
from sms_replies.records import Reply
from sms_replies.schema import COLUMN_NAMES, COLUMNS, to_row
from sms_replies.sinks.clickhouse import (
    FEATURES_SQL,
    Features,
    add_column_sql,
    columns_sql,
    ddl,
    insert_settings,
    read_sql,
)
from sms_replies.sinks.testing import awkward_replies, make_replies
from sms_replies.stores.clickhouse import optouts_sql
from sms_replies.stores.ddl import OPTOUTS, TABLES, clickhouse_create

chdb_session = pytest.importorskip("chdb.session")


class Engine:
    def __init__(self, path: Path) -> None:
        self.session = chdb_session.Session(str(path))

    def run(self, sql: str) -> None:
        self.session.query(sql)

    def rows(self, sql: str) -> list[dict[str, Any]]:
        text = self.session.query(sql, "JSONEachRow").bytes().decode()
        return [orjson.loads(line) for line in text.splitlines() if line.strip()]

    def insert(self, database: str, replies: list[Reply], settings: dict[str, Any]) -> None:
        clause = ", ".join(f"{k} = '{v}'" for k, v in settings.items())
        lines = b"\n".join(orjson.dumps(_json_row(r)) for r in replies).decode()
        self.run(
            f"INSERT INTO `{database}`.replies ({', '.join(COLUMN_NAMES)}) "
            f"{'SETTINGS ' + clause if clause else ''} FORMAT JSONEachRow\n{lines}"
        )


def _json_row(reply: Reply) -> dict[str, Any]:
    row = dict(zip(COLUMN_NAMES, to_row(reply, datetime.now(UTC)), strict=True))
    for name in ("received_at", "ingested_at"):
        row[name] = row[name].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return row


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine(tmp_path_factory.mktemp("chdb"))
    yield engine
    engine.session.close()


@pytest.fixture
def features(engine: Engine) -> Features:
    row = engine.rows(FEATURES_SQL.replace("SELECT version(),", "SELECT version() AS v,"))[0]
    return Features.from_row(list(row.values()))


@pytest.fixture
def database(engine: Engine, features: Features, request: pytest.FixtureRequest) -> str:
    name = f"t_{request.node.name.replace('test_', '')[:40]}"
    engine.run(f"DROP DATABASE IF EXISTS `{name}`")
    engine.run(f"CREATE DATABASE `{name}`")
    engine.run(ddl(name, features))
    return name


def test_a_current_engine_has_every_feature(features: Features) -> None:
    assert int(features.version.split(".")[0]) >= 22
    assert features.datetime64
    assert features.token_dedup


def test_ddl_types_on_a_current_engine(engine: Engine, database: str) -> None:
    types = {
        r["name"]: r["type"]
        for r in engine.rows(f"SELECT name, type FROM system.columns WHERE database = '{database}'")
    }
    assert types["received_at"] == "DateTime64(3, 'UTC')"
    assert types["recipient"] == "Nullable(String)"
    assert types["provider_message_ids"] == "Array(String)"
    engine_full = engine.rows(
        f"SELECT engine_full FROM system.tables WHERE database = '{database}'"
    )[0]["engine_full"]
    assert "ReplacingMergeTree" in engine_full
    assert "non_replicated_deduplication_window = 1000" in engine_full


def test_the_token_drops_a_retried_insert(
    engine: Engine, database: str, features: Features
) -> None:
    batch = make_replies(20)
    settings = insert_settings(features, [r.reply_id for r in reversed(batch)])
    engine.insert(database, batch, settings)
    engine.insert(database, batch, settings)  # the retry of an insert that did land
    raw = engine.rows(f"SELECT count() AS n FROM `{database}`.replies")
    assert int(raw[0]["n"]) == 20


def test_final_reads_one_row_per_reply_and_keeps_milliseconds(
    engine: Engine, database: str
) -> None:
    batch = make_replies(5, days=40)
    engine.insert(database, batch, {})
    changed = [dataclasses.replace(r, text="copy") for r in batch]
    engine.insert(database, changed, {})  # two writers raced past the stored-ids check
    rows = engine.rows(read_sql(database))
    assert sorted(r["reply_id"] for r in rows) == sorted(r.reply_id for r in batch)
    assert {r["received_at"][-3:] for r in rows} != {"000"}


def test_missing_columns_are_added(engine: Engine, features: Features) -> None:
    name = "t_migration"
    engine.run(f"DROP DATABASE IF EXISTS `{name}`")
    engine.run(f"CREATE DATABASE `{name}`")
    engine.run(
        f"CREATE TABLE `{name}`.replies (reply_id String, received_at DateTime64(3, 'UTC')) "
        "ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(received_at) ORDER BY reply_id"
    )
    present = {r["name"] for r in engine.rows(columns_sql(name))}
    for column in COLUMNS:
        if column.name not in present:
            engine.run(add_column_sql(name, column, features))
    assert {r["name"] for r in engine.rows(columns_sql(name))} == set(COLUMN_NAMES)


def test_provider_time_and_attribution_round_trip(engine: Engine, database: str) -> None:
    batch = awkward_replies()
    engine.insert(database, batch, {})
    rows = {r["reply_id"]: r for r in engine.rows(read_sql(database))}
    for reply in batch:
        row = rows[reply.reply_id]
        assert (row["campaign"], row["tag"]) == (reply.campaign, reply.tag)
        if reply.provider_sent_at_ms is None:
            assert row["provider_sent_at"] is None
        else:
            stored = datetime.fromisoformat(row["provider_sent_at"]).replace(tzinfo=UTC)
            assert stored.timestamp() * 1000 == reply.provider_sent_at_ms


def test_every_table_is_created_on_a_current_engine(engine: Engine, features: Features) -> None:
    name = "t_all_tables"
    engine.run(f"DROP DATABASE IF EXISTS `{name}`")
    engine.run(f"CREATE DATABASE `{name}`")
    for table in TABLES:
        engine.run(clickhouse_create(table, name, features))
    rows = engine.rows(f"SELECT name, engine_full FROM system.tables WHERE database = '{name}'")
    engines = {r["name"]: r["engine_full"] for r in rows}
    assert set(engines) == {"replies", "campaigns", "optouts"}
    assert engines["optouts"].startswith("ReplacingMergeTree(version)")
    assert engines["campaigns"].startswith("ReplacingMergeTree(created_at)")


def test_optouts_final_keeps_the_latest_decision_with_milliseconds(
    engine: Engine, features: Features
) -> None:
    """Decisions inserted newest first, one insert each: FINAL reads the latest per sender."""
    name = "t_optouts"
    engine.run(f"DROP DATABASE IF EXISTS `{name}`")
    engine.run(f"CREATE DATABASE `{name}`")
    engine.run(clickhouse_create(OPTOUTS, name, features))
    base = 1_700_000_000_123
    decisions = [
        Decision("a", "opted_out", base, "0a", "text"),
        Decision("a", "opted_in", base + 1, "0b", "keyword"),  # one millisecond later: wins
        Decision("b", "opted_in", base, "ff", "keyword"),
        Decision("b", "opted_out", base, "00", "provider"),  # same millisecond: the STOP wins
    ]
    for d in reversed(decisions):
        since = datetime.fromtimestamp(d.since_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        row = {
            "sender": d.sender,
            "status": d.status,
            "since": since[:-3],
            "reply_id": d.reply_id,
            "source": d.source,
            "version": version(d),
        }
        engine.run(f"INSERT INTO `{name}`.optouts FORMAT JSONEachRow\n{orjson.dumps(row).decode()}")
    rows = {r["sender"]: r for r in engine.rows(optouts_sql(name))}
    assert {s: (r["status"], r["reply_id"]) for s, r in rows.items()} == {
        "a": ("opted_in", "0b"),
        "b": ("opted_out", "00"),
    }
    assert rows["a"]["since"].endswith(".124")  # DateTime64(3): the milliseconds are kept
