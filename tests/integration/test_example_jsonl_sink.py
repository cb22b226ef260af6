"""The example third-party sink (examples/jsonl-sink), found through its entry point.

`make` installs every examples/*/ package editable; this proves a sink living
in another distribution is discovered by name and passes the sink kit.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from sms_replies.schema import COLUMNS
from sms_replies.settings import Settings
from sms_replies.sinks import Sink, available_sinks, load_sink
from sms_replies.sinks.testing import ReadBack, SinkConformance

pytestmark = pytest.mark.integration


def test_the_entry_point_is_discovered() -> None:
    assert "jsonl" in available_sinks(), "pip install -e examples/jsonl-sink (make does it)"
    sink_class = load_sink("jsonl")
    assert sink_class.name == "jsonl"
    assert sink_class.__module__ == "sms_replies_jsonl.sink"


class TestJsonlSinkThroughEntryPoint(SinkConformance):
    @pytest.fixture
    def sink(self, sink_settings: Settings) -> Sink:
        return load_sink("jsonl").from_settings(sink_settings)

    @pytest.fixture
    def read_back(self, sink_settings: Settings) -> ReadBack:
        path: Path = sink_settings.data_dir / "replies.jsonl"  # the sink's documented default

        async def rows() -> list[dict[str, Any]]:
            if not path.exists():
                return []
            stored = [orjson.loads(line) for line in path.read_bytes().splitlines()]
            for row in stored:
                for column in COLUMNS:
                    value = row[column.name]
                    if column.type == "timestamp" and value is not None:
                        row[column.name] = datetime.fromisoformat(value)
            return stored

        return rows

    @pytest.fixture
    def broken_sink(self, sink_settings: Settings) -> Iterator[Sink]:
        # Another writer holds the file's lock: the sink must wait, not interleave lines.
        path = sink_settings.data_dir / "replies.jsonl"
        with path.open("ab") as other_writer:
            fcntl.flock(other_writer, fcntl.LOCK_EX)
            yield load_sink("jsonl").from_settings(sink_settings)
