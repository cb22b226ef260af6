"""What a power cut of `sms-replies run` costs, measured (a figure, not a pass/fail test).

    python -m tests.faults.power_cut --rate 100 --before 20 [--fault broker-kill]

Starts the real `run` (embedded broker, default settings but the ports), sends
provider callbacks at ``--rate`` per second — single replies and long replies of
2-3 parts, parts of one reply a few callbacks apart — and after ``--before``
seconds freezes and kills every process of the run at once (SIGSTOP, SIGKILL).
Then `run` again on the same data directory (``--fault broker-kill``: only the
embedded broker is killed, and `run` restarts it on its own); the provider delivers what did not
get a 200 (and what it had not sent yet); once the stores are quiet and every
pending reply has expired, counts the callbacks answered 200 *before the cut*
whose provider message id is in no stored row: those are lost.

The figures (JSON on stdout) go to docs/guarantees.md, "Power cut: measured".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.conftest import read_rows, wait_ready
from tests.integration.running import Run

CONNECTIONS = 32
EXPIRY_S = 15  # reassembly timeout: every reply is stored, whole or not, soon after


def workload(rng: random.Random, messages: int) -> list[dict[str, str]]:
    """Callbacks in delivery order; the parts of a long reply a few callbacks apart."""
    callbacks: list[tuple[float, dict[str, str]]] = []
    for n in range(messages):
        sender = f"336{10_000_000 + n:08d}"
        base = {"msisdn": sender, "to": "33756781234"}
        if rng.random() < 0.7:
            callbacks.append((n, {**base, "messageId": f"s{n}", "text": f"oui {n}"}))
            continue
        total = rng.choice((2, 3))
        for part in range(1, total + 1):
            fields = {
                **base,
                "messageId": f"m{n}-{part}",
                "concat": "true",
                "concat-ref": str(n % 256),
                "concat-total": str(total),
                "concat-part": str(part),
                "text": f"<{n}.{part}>",
            }
            callbacks.append((n + rng.uniform(0, 5), fields))
    return [fields for _, fields in sorted(callbacks, key=lambda c: c[0])]


class Provider:
    """Delivers callbacks at a rate; remembers when each one got its 200."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted: dict[str, float] = {}

    async def deliver(self, callbacks: list[dict[str, str]], rate: float) -> None:
        slots = asyncio.Semaphore(CONNECTIONS)
        started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int, fields: dict[str, str]) -> None:
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
                async with slots:
                    while fields["messageId"] not in self.accepted:
                        try:
                            async with session.post(self.url, data=fields) as response:
                                if response.status == 200:
                                    self.accepted[fields["messageId"]] = time.monotonic()
                                    return
                        except aiohttp.ClientError:
                            pass
                        await asyncio.sleep(0.2)

            await asyncio.gather(*(one(i, f) for i, f in enumerate(callbacks)))


async def measure(
    work_dir: Path, rate: float, before: float, seed: int, fault: str = "power-cut"
) -> dict[str, Any]:
    rng = random.Random(seed)
    callbacks = workload(rng, int(rate * before * 2))
    run = Run(work_dir, SMS_REPLIES_REASSEMBLY_TIMEOUT=str(EXPIRY_S))
    await run.start()
    provider = Provider(run.callback_url)
    sending = asyncio.create_task(provider.deliver(callbacks, rate))
    await asyncio.sleep(before)
    cut_at = time.monotonic()
    if fault == "power-cut":
        run.power_cut()
    else:  # broker-kill: `run` must notice and restart it (and what depends on it)
        run.broker().kill()
    sending.cancel()
    await asyncio.gather(sending, return_exceptions=True)
    acked_before = dict(provider.accepted)
    try:
        if fault == "power-cut":
            await run.start()
        else:
            await wait_ready(f"{run.base}/readyz", timeout=120)
        restarted_in = time.monotonic() - cut_at
        await provider.deliver(
            [c for c in callbacks if c["messageId"] not in acked_before], rate * 4
        )
        await asyncio.sleep(EXPIRY_S + 10)  # every pending reply expires and is stored
        await run.wait_caught_up(timeout=120)
        rows = read_rows(run.duckdb)
    finally:
        run.stop()
    stored = [i for row in rows for i in row["provider_message_ids"]]
    lost = {i: cut_at - at for i, at in acked_before.items() if i not in set(stored)}
    return {
        "fault": fault,
        "rate_per_s": rate,
        "seconds_before_cut": before,
        "seed": seed,
        "accepted_before_cut": len(acked_before),
        "lost": len(lost),
        "lost_singles": sum(1 for i in lost if i.startswith("s")),
        "lost_parts": sum(1 for i in lost if i.startswith("m")),
        "lost_accepted_within_s_of_cut": round(max(lost.values()), 2) if lost else 0.0,
        "rows": len(rows),
        "ids_stored_twice": len(stored) - len(set(stored)),
        "incomplete_rows": sum(1 for row in rows if not row["complete"]),
        "restart_to_ready_s": round(restarted_in, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="callbacks per second")
    parser.add_argument("--before", type=float, default=20.0, help="seconds of load before the cut")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--fault",
        choices=("power-cut", "broker-kill"),
        default="power-cut",
        help="every process of the run, or only its embedded broker (SIGKILL)",
    )
    parser.add_argument("--work-dir", type=Path, help="keep the logs and data here")
    args = parser.parse_args()
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="power-cut-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    figures = asyncio.run(measure(work_dir, args.rate, args.before, args.seed, args.fault))
    print(json.dumps(figures, indent=2))
    if args.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
