"""The throwaway ClickHouse server of the tests starts even when a port it was given
is taken before it binds it (CI, 2026-12-02: "Address already in use", exit 70)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sms_replies.broker.embedded import free_port
from tests import clickhouse_server
from tests.clickhouse_server import clickhouse_server_binary, local_clickhouse_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(clickhouse_server_binary() is None, reason="clickhouse-server missing"),
]


@pytest.mark.timeout(120)
def test_a_port_taken_before_the_server_binds_it_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        ports = iter([busy])
        monkeypatch.setattr(
            clickhouse_server, "free_port", lambda: next(ports, None) or free_port()
        )
        with local_clickhouse_server(tmp_path) as server:
            assert server.port != busy
            with socket.create_connection((server.host, server.port), timeout=5):
                pass
