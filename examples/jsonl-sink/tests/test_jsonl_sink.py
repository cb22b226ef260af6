"""The JSON Lines sink against the sms-replies sink kit, plus its own crash cases."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sms_replies_jsonl import JsonlSink

from sms_replies.sinks import COLUMNS, Settings
from sms_replies.sinks.testing import ReadBack, SinkConformance, make_replies

_TIMESTAMPS = [c.name for c in COLUMNS if c.type == "timestamp"]


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    for row in rows:
        for name in _TIMESTAMPS:
            if row[name] is not None:  # provider_sent_at may be null
                row[name] = datetime.fromisoformat(row[name])
    return rows


class TestJsonlSinkContract(SinkConformance):
    @pytest.fixture
    def sink(self, sink_settings: Settings) -> JsonlSink:
        return JsonlSink.from_settings(sink_settings)

    @pytest.fixture
    def read_back(self, sink: JsonlSink) -> ReadBack:
        async def rows() -> list[dict[str, Any]]:
            return read_rows(sink.path)

        return rows

    @pytest.fixture
    def broken_sink(self, tmp_path: Path) -> Iterator[JsonlSink]:
        path = tmp_path / "held.jsonl"
        with path.open("ab") as other_writer:
            fcntl.flock(other_writer, fcntl.LOCK_EX)
            yield JsonlSink(path)


async def test_an_unfinished_last_line_is_cut_and_replayed(tmp_path: Path) -> None:
    path = tmp_path / "replies.jsonl"
    batch = make_replies(4)
    async with JsonlSink(path) as sink:
        await sink.write(batch[:2])
    with path.open("ab") as crashed:  # a writer died in the middle of the next batch
        crashed.write(b'{"reply_id": "r-0000000')
    async with JsonlSink(path) as sink:
        await sink.write(batch)  # the runner replays the uncommitted batch
    assert [row["reply_id"] for row in read_rows(path)] == [r.reply_id for r in batch]


async def test_a_corrupt_line_stops_the_sink_instead_of_duplicating(tmp_path: Path) -> None:
    from sms_replies.errors import SinkWriteError

    path = tmp_path / "replies.jsonl"
    path.write_bytes(b"not json\n")
    with pytest.raises(SinkWriteError, match="not a reply line") as info:
        await JsonlSink(path).setup()
    assert info.value.retriable
