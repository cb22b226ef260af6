"""Power cut of `sms-replies run`: every process frozen and killed at once, then `run`
again on the same data directory. Long replies that straddle the cut are reassembled
once, a provider's retry of a stored reply makes no new row, and expiry still works."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import read_rows, wait_for_rows
from tests.integration.running import Run, long_reply, post, text_of

pytestmark = pytest.mark.integration

TIMEOUT_S = 60  # reassembly timeout: longer than a restart, short enough to see an expiry


@pytest.mark.timeout(400)
async def test_long_replies_straddling_a_power_cut_are_stored_once(tmp_path: Path) -> None:
    run = Run(tmp_path, SMS_REPLIES_REASSEMBLY_TIMEOUT=str(TIMEOUT_S))
    straddling = {sender: long_reply(sender, ref=sender, total=3) for sender in range(1, 7)}
    whole = {sender: long_reply(sender, ref=sender, total=2) for sender in range(11, 14)}
    never_completed = long_reply(21, ref=21, total=2)
    singles = [
        {"msisdn": f"3361000000{n}", "to": "33756781234", "messageId": f"s{n}", "text": "Oui"}
        for n in range(2)
    ]
    # Before the cut: all but one part of each straddling reply (for one, the last part
    # came first), whole replies, one part of a reply that will never be completed.
    before = [*(parts[:-1] for parts in list(straddling.values())[:-1])]
    last_sender = max(straddling)
    before.append(straddling[last_sender][1:])
    first = [c for parts in before for c in parts]
    first += [c for parts in whole.values() for c in parts] + never_completed[:1] + singles
    await run.start()
    try:
        async with aiohttp.ClientSession() as session:
            assert set(await post(session, run.callback_url, first)) == {200}
            await wait_for_rows(run.duckdb, len(whole) + len(singles))
            # Every 200 is in the worker's state: what a power cut can cost is measured
            # elsewhere (tests/faults/power_cut.py); here the state must survive it.
            await run.wait_caught_up()
        killed = run.power_cut()
        assert killed >= 5  # run, broker, worker, sinks, ingest (and api)

        await run.start()
        missing = [parts[-1] for parts in list(straddling.values())[:-1]]
        missing.append(straddling[last_sender][0])
        retries = [whole[11][0], whole[12][1], straddling[1][0]]
        async with aiohttp.ClientSession() as session:
            assert set(await post(session, run.callback_url, missing + retries)) == {200}
        expected = len(singles) + len(whole) + len(straddling) + 1
        rows = await wait_for_rows(run.duckdb, expected, timeout=TIMEOUT_S + 60)
        await run.wait_caught_up()
        rows = read_rows(run.duckdb)
    finally:
        run.stop()
    texts = sorted((r["text"], r["complete"]) for r in rows)
    want = sorted(
        [("Oui", True)] * len(singles)
        + [(text_of(s, 3), True) for s in straddling]
        + [(text_of(s, 2), True) for s in whole]
        + [("<21.1>[…]", False)]
    )
    assert texts == want
    assert len({r["reply_id"] for r in rows}) == len(rows)
