"""Fuzz the public ingress with malformed and hostile HTTP requests over real sockets.

``python -m benchmarks.fuzz_ingress --requests 100000`` starts an embedded
broker and a real ingress process (``python -m sms_replies ingest``), then
sends the requests with ``--concurrency`` raw-socket clients: random bodies,
wrong content types, huge and deeply nested fields, non-UTF-8, broken
percent-encoding, duplicated keys, numbers out of range, NUL bytes, unicode
edge cases, header abuse, wrong methods, truncated, stalled and slow bodies,
garbage request lines... Each request is generated from its own seeded random
source, so a run is reproducible (``--seed``).

It then checks that no answer was a 5xx other than 503, that no answer carried
a traceback, that the ingress process is still alive and that a valid callback
still gets 200; ``run()`` returns the figures (status counts, requests per
second, audit records written) and the failed checks as ``failures``;
``python -m benchmarks.fuzz_ingress`` prints them and exits 1 on a failure.

By job: :mod:`.cases` (the requests), :mod:`.client` (sending, classifying
answers), :mod:`.checks` (what must hold), :mod:`.report` (probes, the table).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.fuzz_ingress.cases import TOKEN
from benchmarks.fuzz_ingress.checks import check
from benchmarks.fuzz_ingress.client import fire
from benchmarks.fuzz_ingress.report import (
    _count,
    _count_parts,
    _rate_limited,
    _valid_callback,
    _wait_ready,
    print_summary,
)
from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import EmbeddedBroker, free_port
from sms_replies.procs import spawn
from sms_replies.settings import Settings

# -- the run ----------------------------------------------------------------------


def run(
    requests: int = 100_000,
    *,
    seed: int = 7,
    concurrency: int = 64,
    bootstrap: str | None = None,
    console: Console | None = None,
    keep_log: Path | None = None,
) -> dict[str, Any]:
    """Fuzz a fresh ingress process; the figures, ``failures`` among them (empty: it held)."""
    with contextlib.ExitStack() as stack:
        if bootstrap is None:
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fuzz-ingress-")))
        settings = Settings.load(
            kafka_bootstrap=bootstrap,
            kafka_embedded=True,
            topic_prefix=f"fuzz-{uuid.uuid4().hex[:8]}",
            http_port=free_port(),
            data_dir=scratch,
            callback_token=TOKEN,
            body_timeout=1.0,
            log_level="WARNING",
        )
        asyncio.run(ensure_topics(settings.bootstrap, settings.topics, partitions=2))
        log_path = scratch / "ingest.log"
        with log_path.open("wb") as log:
            ingress = spawn(
                [sys.executable, "-m", "sms_replies", "ingest"],
                env={**os.environ, **settings.as_env()},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            figures = asyncio.run(_fuzz(settings, ingress, requests, seed, concurrency))
        finally:
            ingress.terminate()
            try:
                ingress.wait(30)
            except subprocess.TimeoutExpired:
                ingress.kill()
                ingress.wait()
        log_text = log_path.read_text(errors="replace")
        if keep_log is not None:
            keep_log.write_text(log_text)
        figures["internal_errors_logged"] = log_text.count("internal error on")
    if console is not None:
        print_summary(figures, console)
    # Results, not asserts (which python -O strips): the caller decides.
    figures["failures"] = check(figures)
    return figures


async def _fuzz(
    settings: Settings, ingress: subprocess.Popen[bytes], requests: int, seed: int, concurrency: int
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{settings.http_port}"
    await _wait_ready(f"{base}/readyz", ingress)
    started = time.perf_counter()
    outcomes = await fire(settings.http_port, requests, seed, concurrency)
    seconds = time.perf_counter() - started
    alive = ingress.poll() is None
    valid_after = await _valid_callback(base) if alive else None
    statuses = collections.Counter(o.status for o in outcomes)
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for o in outcomes:
        by_kind[o.kind][o.status] += 1
    return {
        "requests": len(outcomes),
        "seconds": round(seconds, 2),
        "requests_per_second": round(len(outcomes) / seconds, 1),
        "statuses": dict(sorted(statuses.items())),
        "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(by_kind.items())},
        "ms_by_kind": {
            kind: round(
                1000 * sum(o.seconds for o in outcomes if o.kind == kind) / sum(n.values()), 1
            )
            for kind, n in sorted(by_kind.items())
        },
        "json_answers": sum(o.json for o in outcomes),
        "app_rejects_answered": sum(
            o.json and o.status.isdigit() and int(o.status) >= 400 for o in outcomes
        ),
        "audited": await _count(settings.bootstrap, settings.topics.rejects),
        # 404/405 beyond the audit rate are counted by the ingress, not kept.
        "rate_limited": await _rate_limited(base) if alive else 0,
        "router_rejects_answered": sum(o.json and o.status in ("404", "405") for o in outcomes),
        "accepted_on_raw_topic": await _count_parts(settings.bootstrap, settings.topics.raw),
        "leaks": sum(o.leak for o in outcomes),
        "ingress_alive": alive,
        "valid_after": valid_after,
    }
