"""``erase`` on the running pipeline: stores' bytes, the worker's state, and what comes later.

Real processes (ingress, Faust worker on RocksDB, DuckDB and Parquet sinks) on
the real embedded broker, with a pseudonymisation key. After ``erase``: the
number's replies are gone from the bytes of the DuckDB file and the Parquet
parts, its held parts from the worker's state, and a part the provider re-sends
(within the dedup horizon) makes no row.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from sms_replies.privacy import pseudonymize
from sms_replies.settings import Settings
from tests.integration.conftest import Processes, read_rows, wait_for_rows, wait_ready
from tests.integration.privacy_search import decoded_stores, file_hits, found_in, number_forms

pytestmark = pytest.mark.integration

KEY = "integration-erasure-key"
LONG = "33756781234"
ERASED, PENDING, KEPT = "+33600000201", "+33600000202", "+33600000203"
ERASED_TEXTS = ("Zorglub erase ", "me please", "Pending secret")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared per-test settings (conftest), with the parts this test needs."""
    return settings.model_copy(
        update={
            "expiry_tick_interval": 1.0,
            "sinks": ["duckdb", "parquet"],
            "pseudonymize_key": SecretStr(KEY),
        }
    )


def part(sender: str, message_id: str, ref: int, n: int, text: str) -> dict[str, Any]:
    return {
        "msisdn": sender,
        "to": LONG,
        "messageId": message_id,
        "concat": "true",
        "concat-ref": str(ref),
        "concat-total": "2",
        "concat-part": str(n),
        "text": text,
    }


def single(sender: str, message_id: str, text: str) -> dict[str, Any]:
    return {"msisdn": sender, "to": LONG, "messageId": message_id, "text": text}


async def send(url: str, *callbacks: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session:
        for fields in callbacks:
            async with session.post(url, data=fields) as response:
                assert response.status == 200, await response.text()


def erase(settings: Settings, phone: str, parquet: Path) -> str:
    env = {
        **os.environ,
        "SMS_REPLIES_DATA_DIR": str(settings.data_dir),
        "SMS_REPLIES_SINKS": "duckdb,parquet",
        "SMS_REPLIES_PARQUET_DIRECTORY": str(parquet),
        "SMS_REPLIES_PSEUDONYMIZE_KEY": KEY,
    }
    env.pop("SMS_REPLIES_POSTGRES_DSN", None)
    done = subprocess.run(
        [sys.executable, "-m", "sms_replies", "erase", "--phone", phone],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_erase_removes_bytes_state_and_what_comes_later(
    processes: Processes, settings: Settings
) -> None:
    parquet = settings.data_dir / "parquet"
    processes.start("worker")
    processes.start("sinks", SMS_REPLIES_PARQUET_COMPRESSION="none")  # bytes readable
    processes.start("ingest")
    base = f"http://{settings.http_host}:{settings.http_port}"
    await wait_ready(f"{base}/readyz")
    url = f"{base}/callbacks/smspartner"
    db = settings.data_dir / "replies.duckdb"

    await send(
        url,
        part(ERASED, "e-1", 11, 1, ERASED_TEXTS[0]),
        part(ERASED, "e-2", 11, 2, ERASED_TEXTS[1]),
        part(PENDING, "p-1", 12, 1, ERASED_TEXTS[2]),  # its part 2 has not come yet
        single(KEPT, "k-1", "Bonjour"),
    )
    rows = await wait_for_rows(db, 2)
    assert sorted(r["text"] for r in rows) == ["Bonjour", "Zorglub erase me please"]

    assert "duckdb: deleted 1\nparquet: deleted 1\n" in erase(settings, "06 00 00 02 01", parquet)
    assert "duckdb: deleted 0\nparquet: deleted 0\n" in erase(settings, PENDING[1:], parquet)

    # The provider re-sends a part of the erased reply, and the missing part of
    # the pending one; then a new reply, to know when the pipeline is through.
    await send(
        url,
        part(ERASED, "e-1", 11, 1, ERASED_TEXTS[0]),
        part(PENDING, "p-2", 12, 2, " and more"),
        single(KEPT, "k-2", "Merci"),
    )
    rows = await wait_for_rows(db, 2)
    await asyncio.sleep(3)  # ticks: the worker purges its state; sinks would write by now
    rows = read_rows(db)
    assert sorted(r["text"] for r in rows) == ["Bonjour", "Merci"]
    assert {r["sender"] for r in rows} == {pseudonymize(KEPT, KEY.encode())}

    processes.stop_all()  # files closed: read them
    erased_forms = [pseudonymize(number, KEY.encode()).encode() for number in (ERASED, PENDING)] + [
        form for number in (ERASED, PENDING) for form in number_forms(number)
    ]
    needles = [*erased_forms, *(t.encode() for t in ERASED_TEXTS)]
    stores = {
        path: found
        for path, found in file_hits(settings.data_dir, needles).items()
        # The erasure list is the keyed hash, by design; so are the keys of the
        # worker's RocksDB tombstones (no text or number may be left there).
        if path != "erasures"
        and not (path.startswith("worker/") and not [f for f in found if not f.startswith(b"h:")])
    }
    assert stores == {}, "erased bytes left in the stores' files"
    decoded = {
        name: found
        for name, data in decoded_stores(settings.data_dir).items()
        if (found := found_in(data, needles))
    }
    assert decoded == {}, "erased rows or worker state left"
    assert "Bonjour" in str(decoded_stores(settings.data_dir))  # the search can find things
