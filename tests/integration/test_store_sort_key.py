"""ClickHouse: one sender's replies are read from a few granules, not the whole table
(the replies' sort key starts with ``sender``; docs/analytics.md, "Scale"), and
ReplacingMergeTree still keeps one row per reply_id."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from clickhouse_driver import Client

from sms_replies.stores.clickhouse import detect_features, ensure_tables
from tests.clickhouse_server import LocalServer, clickhouse_server_binary, local_clickhouse_server

pytestmark = pytest.mark.integration

ROWS = 100_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    if clickhouse_server_binary() is None:
        pytest.skip("clickhouse-server is not installed; `make test` installs it")
    with local_clickhouse_server(tmp_path_factory.mktemp("clickhouse-sort-key")) as started:
        yield started


@pytest.fixture
def client(server: LocalServer) -> Iterator[tuple[Client, str]]:
    database = f"sort_key_{uuid.uuid4().hex[:12]}"
    client = Client(server.host, port=server.port)
    try:
        ensure_tables(client, database, detect_features(client))
        client.execute(
            f"INSERT INTO `{database}`.replies (reply_id, channel, sender, recipient, text, "
            "keyword, is_stop, parts_expected, parts_received, complete, received_at, "
            "ingested_at, provider_message_ids) SELECT concat('r', toString(number)), "
            "'long_number', concat('+3361', toString(number % 1000)), '+33756781234', 'oui', "
            "'OUI', 0, 1, 1, 1, toDateTime(1790000000 + number), toDateTime(1790000000 + number), "
            f"[concat('m', toString(number))] FROM system.numbers LIMIT {ROWS}"
        )
        client.execute(f"OPTIMIZE TABLE `{database}`.replies FINAL")
        yield client, database
    finally:
        client.execute(f"DROP DATABASE IF EXISTS `{database}`")
        client.disconnect()


def test_one_senders_replies_read_a_few_granules(client: tuple[Client, str]) -> None:
    con, database = client
    rows = con.execute(
        f"SELECT reply_id FROM `{database}`.replies FINAL WHERE sender = %(sender)s "
        "ORDER BY received_at DESC LIMIT 101",
        {"sender": "+3361123"},
    )
    assert len(rows) == 100
    read = con.last_query.progress.rows
    assert read < ROWS // 5, f"read {read} of {ROWS} rows"


def test_a_reply_stored_twice_is_one_row(client: tuple[Client, str]) -> None:
    con, database = client
    con.execute(
        f"INSERT INTO `{database}`.replies SELECT * FROM `{database}`.replies "
        "WHERE sender = '+3361123'"
    )
    (total,) = con.execute(f"SELECT count() FROM `{database}`.replies FINAL")[0]
    assert total == ROWS
