"""The ClickHouse sink against the sink kit, on a real clickhouse-server.

The server is Debian's ``clickhouse-server`` package (18.16 on bookworm),
started once per session on free ports with its data in a temporary directory.
``test_clickhouse_modern_sql.py`` checks the DDL and queries a current server
would run, in-process with chdb.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from clickhouse_driver import Client

from sms_replies.errors import SinkWriteError
from sms_replies.schema import COLUMN_NAMES, COLUMNS
from sms_replies.sinks.clickhouse import ClickHouseSink, ClickHouseSinkSettings, read_sql
from sms_replies.sinks.testing import ReadBack, SinkConformance, make_replies
from tests.clickhouse_server import LocalServer, clickhouse_server_binary, local_clickhouse_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def clickhouse_server(
    tmp_path_factory: pytest.TempPathFactory,
    record_testsuite_property: Callable[[str, object], None],
) -> Iterator[LocalServer]:
    if clickhouse_server_binary() is None:
        pytest.skip(
            "clickhouse-server is not installed (apt-get install -y clickhouse-server); "
            "`make test` installs it"
        )
    with local_clickhouse_server(tmp_path_factory.mktemp("clickhouse")) as server:
        # The version the suite really ran on, in the JUnit XML report (--junitxml).
        record_testsuite_property("clickhouse_server_version", server_version(server))
        yield server


@pytest.fixture
def database(clickhouse_server: LocalServer) -> Iterator[str]:
    name = f"sink_test_{uuid.uuid4().hex[:12]}"
    yield name
    client = Client(clickhouse_server.host, port=clickhouse_server.port)
    try:
        client.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        client.disconnect()


def make_sink(server: LocalServer, database: str) -> ClickHouseSink:
    return ClickHouseSink(
        ClickHouseSinkSettings(host=server.host, port=server.port, database=database)
    )


def query(server: LocalServer, sql: str) -> list[dict[str, Any]]:
    client = Client(server.host, port=server.port)
    try:
        rows, columns = client.execute(sql, with_column_types=True)
        return [dict(zip([c[0] for c in columns], row, strict=True)) for row in rows]
    finally:
        client.disconnect()


def server_version(server: LocalServer) -> str:
    return str(query(server, "SELECT version() AS v")[0]["v"])


class TestClickHouseSinkContract(SinkConformance):
    # 18.16 has no DateTime64: whole seconds there (a current server keeps ms).
    timestamp_precision: ClassVar[timedelta] = timedelta(seconds=1)

    @pytest.fixture
    def sink(self, clickhouse_server: LocalServer, database: str) -> ClickHouseSink:
        return make_sink(clickhouse_server, database)

    @pytest.fixture
    def read_back(self, clickhouse_server: LocalServer, database: str) -> ReadBack:
        async def rows() -> list[dict[str, Any]]:
            return query(clickhouse_server, read_sql(database))

        return rows

    @pytest.fixture
    def broken_sink(self) -> Iterator[ClickHouseSink]:
        # A port that accepts TCP and never answers: the handshake must time out.
        with socket.socket() as black_hole:
            black_hole.bind(("127.0.0.1", 0))
            black_hole.listen(8)
            yield ClickHouseSink(
                ClickHouseSinkSettings(
                    port=black_hole.getsockname()[1],
                    connect_timeout=0.5,
                    send_receive_timeout=0.5,
                )
            )


def test_server_version_is_known(clickhouse_server: LocalServer) -> None:
    assert server_version(clickhouse_server).count(".") >= 2


async def test_features_detected(clickhouse_server: LocalServer, database: str) -> None:
    async with make_sink(clickhouse_server, database) as sink:
        features = sink.features
    assert features is not None
    assert features.version == server_version(clickhouse_server)
    major = int(features.version.split(".")[0])
    assert features.datetime64 == (major >= 20)
    assert features.token_dedup == (major >= 22)


async def test_replay_stores_no_second_copy_even_without_final(
    clickhouse_server: LocalServer, database: str
) -> None:
    batch = make_replies(100, days=40)  # several monthly partitions
    async with make_sink(clickhouse_server, database) as sink:
        await sink.write(batch)
        await sink.write(batch)
    raw = query(clickhouse_server, f"SELECT reply_id FROM `{database}`.replies")
    assert len(raw) == 100


async def test_final_collapses_copies_that_raced_past_the_check(
    clickhouse_server: LocalServer, database: str
) -> None:
    batch = make_replies(10)
    async with make_sink(clickhouse_server, database) as sink:
        await sink.write(batch)
    columns = ", ".join(COLUMN_NAMES)
    query(  # a second writer's copy of the same rows, as after a rebalance race
        clickhouse_server,
        f"INSERT INTO `{database}`.replies ({columns}) SELECT {columns} FROM `{database}`.replies",
    )
    assert len(query(clickhouse_server, f"SELECT reply_id FROM `{database}`.replies")) == 20
    assert len(query(clickhouse_server, read_sql(database))) == 10


async def test_setup_adds_columns_missing_from_an_old_table(
    clickhouse_server: LocalServer, database: str
) -> None:
    query(clickhouse_server, f"CREATE DATABASE `{database}`")
    query(
        clickhouse_server,
        f"CREATE TABLE `{database}`.replies (reply_id String, received_at DateTime('UTC')) "
        "ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(received_at) ORDER BY reply_id",
    )
    async with make_sink(clickhouse_server, database) as sink:
        await sink.write(make_replies(3))
    names = query(
        clickhouse_server,
        f"SELECT name FROM system.columns WHERE database = '{database}' AND table = 'replies'",
    )
    assert {row["name"] for row in names} == {c.name for c in COLUMNS}
    assert len(query(clickhouse_server, read_sql(database))) == 3


async def test_refused_connection_is_retriable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = ClickHouseSink(ClickHouseSinkSettings(port=port, connect_timeout=1))
    with pytest.raises(SinkWriteError) as info:
        await sink.write(make_replies(1))
    assert info.value.retriable
    await sink.close()
