"""The reference DuckDB sink against the sink kit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sms_replies.settings import Settings
from sms_replies.sinks.duckdb import DuckDBSink
from sms_replies.sinks.testing import ReadBack, SinkConformance
from tests.integration.conftest import read_rows

pytestmark = pytest.mark.integration

# Holds DuckDB's write lock from another process until its stdin closes.
_HOLD_LOCK = (
    "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
    "print('locked', flush=True); sys.stdin.read()"
)


class TestDuckDBSinkContract(SinkConformance):
    @pytest.fixture
    def sink(self, sink_settings: Settings) -> DuckDBSink:
        return DuckDBSink.from_settings(sink_settings)

    @pytest.fixture
    def read_back(self, sink: DuckDBSink) -> ReadBack:
        async def rows() -> list[dict[str, Any]]:
            # Through the sink's endpoint while it owns the store (served by this loop).
            return await asyncio.to_thread(read_rows, sink.path)

        return rows

    @pytest.fixture
    def broken_sink(self, tmp_path: Path) -> Iterator[DuckDBSink]:
        path = tmp_path / "locked.duckdb"
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LOCK, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert holder.stdout is not None
        assert holder.stdin is not None
        try:
            assert holder.stdout.readline() == b"locked\n"
            yield DuckDBSink(path)
        finally:
            holder.stdin.close()
            holder.wait(timeout=10)
            holder.stdout.close()
