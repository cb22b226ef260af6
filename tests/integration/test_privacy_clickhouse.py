"""Erasure and retention on a real clickhouse-server (the sink kit's launcher), bytes included."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from sms_replies.analytics.privacy_cli import Stores, apply_policy, erase_command, erase_sender
from tests.analytics_sample import SAMPLE_REPLIES
from tests.clickhouse_server import LocalServer
from tests.integration.test_sink_contract_clickhouse import (  # noqa: F401 - fixtures
    clickhouse_server,
    database,
    make_sink,
    query,
)

pytestmark = pytest.mark.integration

ERASED = "+33600000002"
STORES = Stores(clickhouse=True)


@pytest.fixture
async def stored(
    clickhouse_server: LocalServer,  # noqa: F811
    database: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The sample replies in the table; the commands read the sink's settings."""
    monkeypatch.setenv("SMS_REPLIES_CLICKHOUSE_HOST", clickhouse_server.host)
    monkeypatch.setenv("SMS_REPLIES_CLICKHOUSE_PORT", str(clickhouse_server.port))
    monkeypatch.setenv("SMS_REPLIES_CLICKHOUSE_DATABASE", database)
    sink = make_sink(clickhouse_server, database)
    await sink.setup()
    await sink.write(SAMPLE_REPLIES)
    await sink.close()
    return database


def active_part_bytes(server: LocalServer, name: str) -> bytes:
    """Every file of the table's active parts (replaced parts wait for old_parts_lifetime)."""
    parts = query(
        server,
        f"SELECT path FROM system.parts WHERE database = '{name}' AND table = 'replies' AND active",
    )
    data = b""
    for part in parts:
        for path in sorted(Path(part["path"]).rglob("*")):
            if path.is_file():
                data += path.read_bytes()
    return data


def senders(server: LocalServer, name: str) -> set[str]:
    rows = query(server, f"SELECT sender FROM `{name}`.replies FINAL")
    return {row["sender"] for row in rows}


async def test_erase_rewrites_the_parts(
    clickhouse_server: LocalServer,  # noqa: F811
    stored: str,
) -> None:
    kept = {r.text for r in SAMPLE_REPLIES if r.sender != ERASED}
    own = [r.text for r in SAMPLE_REPLIES if r.sender == ERASED]
    needles = [ERASED.encode(), *(t.encode() for t in own if not any(t in k for k in kept))]
    before = active_part_bytes(clickhouse_server, stored)
    # LZ4 blocks: the senders, alike, compress into back-references, but the
    # erased number's own text is there for a byte search to find.
    assert [n for n in needles[1:] if n in before] == needles[1:] != []
    assert await erase_sender(STORES, ERASED) == {"clickhouse": 2}
    assert ERASED not in senders(clickhouse_server, stored)
    after = active_part_bytes(clickhouse_server, stored)
    assert [n for n in needles if n in after] == []
    assert b"Info svp" in after  # what was kept is still there to be found
    assert await erase_sender(STORES, ERASED) == {"clickhouse": 0}


async def test_cnil_policy(
    clickhouse_server: LocalServer,  # noqa: F811
    stored: str,
) -> None:
    last: dict[str, datetime] = {}
    for reply in SAMPLE_REPLIES:
        at = datetime.fromtimestamp(reply.received_at_ms / 1000).astimezone()
        last[reply.sender] = max(at, last.get(reply.sender, at))
    cutoff = datetime.fromisoformat("2025-03-30T10:00Z")
    silent = {s for s, at in last.items() if at < cutoff}
    assert silent
    assert len(silent) < len(last)
    expected = sum(1 for r in SAMPLE_REPLIES if r.sender in silent)
    now = datetime.fromisoformat("2028-03-30T10:00Z")
    assert await apply_policy(STORES, "cnil", now=now, dry_run=True) == {"clickhouse": expected}
    assert await apply_policy(STORES, "cnil", now=now) == {"clickhouse": expected}
    assert senders(clickhouse_server, stored) == set(last) - silent


async def test_retention_by_days(
    clickhouse_server: LocalServer,  # noqa: F811
    stored: str,
) -> None:
    from sms_replies.analytics.privacy_cli import apply_retention

    now = datetime.fromisoformat("2025-03-31T09:15Z")
    cutoff_ms = int(datetime.fromisoformat("2025-03-30T09:15Z").timestamp() * 1000)
    old = {r.reply_id for r in SAMPLE_REPLIES if r.received_at_ms < cutoff_ms}
    assert 0 < len(old) < len(SAMPLE_REPLIES)
    assert await apply_retention(STORES, 1, now=now) == {"clickhouse": len(old)}
    rows = query(clickhouse_server, f"SELECT reply_id FROM `{stored}`.replies FINAL")
    left = {row["reply_id"] for row in rows}
    assert left == {r.reply_id for r in SAMPLE_REPLIES} - old


async def test_store_url_names_the_clickhouse_server(
    clickhouse_server: LocalServer,  # noqa: F811
    stored: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--store clickhouse://host:port/db: neither SMS_REPLIES_SINKS nor the CLICKHOUSE_* needed."""
    for name in ("HOST", "PORT", "DATABASE"):
        monkeypatch.delenv(f"SMS_REPLIES_CLICKHOUSE_{name}")
    url = f"clickhouse://{clickhouse_server.host}:{clickhouse_server.port}/{stored}"
    result = await asyncio.to_thread(
        CliRunner().invoke,
        erase_command,
        ["--phone", "06 00 00 00 02", "--data-dir", str(tmp_path), "--store", url],
        env={"SMS_REPLIES_SINKS": None, "SMS_REPLIES_POSTGRES_DSN": None},
    )
    assert result.exit_code == 0, result.output
    assert "clickhouse: deleted 2\n" in result.output
    # r2 was a STOP: the number stays on the stop-list, and erase says so.
    assert "clickhouse: opt-out kept" in result.output
    assert ERASED not in senders(clickhouse_server, stored)
