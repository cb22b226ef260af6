"""Serve the ingress from one or several processes sharing the port (SO_REUSEPORT).

One aiohttp process tops out at one core (benchmarks/ingress.py); with
``ingest_workers`` N > 1 the parent starts N children that each bind the same
address with SO_REUSEPORT, and the kernel spreads connections among them. Each
child has its own Kafka producer: acks=all and the 200-after-ack contract are
per request, so nothing changes for the provider. The parent only supervises:
it forwards SIGTERM/SIGINT and exits when every child has.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
from types import FrameType

from aiohttp import web

from sms_replies import logs
from sms_replies.ingest.app import create_app
from sms_replies.settings import Settings

log = logging.getLogger(__name__)

#: Allocations between two young-generation collections (CPython's default: 700).
#: A callback allocates a few hundred objects that die by reference counting; the
#: default collects every few callbacks and scans what is in flight each time.
GC_THRESHOLD = 20_000


def serve(settings: Settings) -> None:
    """Run the ingress until SIGTERM/SIGINT, in ``settings.ingest_workers`` processes."""
    if settings.ingest_workers == 1:
        _run(settings, reuse_port=False)
        return
    if settings.http_port == 0:
        # Each child would get its own random port: no shared listener.
        raise ValueError("ingest_workers > 1 needs a fixed http_port")
    context = multiprocessing.get_context("spawn")  # no inherited event loop or producer
    children = [
        context.Process(target=_child, args=(settings,), name=f"ingest-{n}", daemon=False)
        for n in range(settings.ingest_workers)
    ]
    for child in children:
        child.start()
    log.info(
        "ingress on %s:%d in %d processes (SO_REUSEPORT)",
        settings.http_host,
        settings.http_port,
        len(children),
    )

    def forward(signum: int, frame: FrameType | None) -> None:
        # aiohttp stops gracefully on either signal: in-flight callbacks get their answer.
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()


def _child(settings: Settings) -> None:
    logs.configure(settings.log_level, "ingest", settings.secret_values())
    _run(settings, reuse_port=True)


def tune_gc() -> None:
    """Fewer garbage collections in an ingress process (cycles are still collected).

    What is loaded at start-up is frozen (never scanned again) and the young
    generation is collected every GC_THRESHOLD allocations: under wrk, 4
    alternating rounds, 88.2 -> 84.2 us of CPU per GET, 108.8 -> 102.0 per form
    POST (docs/benchmarks.md, Ingress).
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, middle, old)


def _run(settings: Settings, *, reuse_port: bool) -> None:
    tune_gc()
    web.run_app(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        print=None,
        shutdown_timeout=settings.publish_timeout + 5,
        access_log=None,
        reuse_port=reuse_port or None,
    )
