"""Prometheus metrics of every process, and the one ``/metrics`` page that shows them.

Each process (ingress, API, sinks, worker) exposes its own registry at
``/metrics``: aiohttp apps through :func:`add_metrics_route`, the Faust worker
through :func:`exposition` in its own page.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest


def exposition() -> tuple[bytes, dict[str, str]]:
    """This process's metrics in the Prometheus text format, and the headers to send them with."""
    # As a header: aiohttp refuses a content_type argument with a charset in it.
    return generate_latest(), {"Content-Type": CONTENT_TYPE_LATEST}


async def handle_metrics(request: web.Request) -> web.Response:
    body, headers = exposition()
    return web.Response(body=body, headers=headers)


def add_metrics_route(app: web.Application) -> None:
    app.router.add_get("/metrics", handle_metrics)


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe(amount)`` for each amount, with one increment a bucket.

    prometheus_client has no batch observation: this adds to the histogram's own
    sum and bucket values as ``observe`` does (the first bucket whose bound is at
    least the amount; the last bound is +Inf). tests/unit/test_metrics_batch.py
    compares it with ``observe``.
    """
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1
    histogram._sum.inc(sum(amounts))
    for bucket, count in enumerate(counts):
        if count:
            histogram._buckets[bucket].inc(count)


CALLBACKS = Counter(
    "sms_replies_callbacks_total", "Callbacks received by the ingress, by outcome.", ["outcome"]
)
PUBLISH_SECONDS = Histogram(
    "sms_replies_publish_seconds",
    "Time from callback received to broker acknowledgement.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PARTS_PROCESSED = Counter(
    "sms_replies_parts_processed_total", "Raw parts handled by the reassembler.", ["result"]
)
REPLIES_EMITTED = Counter(
    "sms_replies_replies_emitted_total", "Replies published by the reassembler.", ["complete"]
)
PENDING_MESSAGES = Gauge(
    "sms_replies_pending_messages", "Long replies waiting for parts in this worker."
)
SINK_REPLIES_WRITTEN = Counter(
    "sms_replies_sink_replies_written_total", "Replies written, per sink.", ["sink"]
)
SINK_WRITE_FAILURES = Counter(
    "sms_replies_sink_write_failures_total", "Failed batch writes (retried), per sink.", ["sink"]
)
SINK_DEAD_LETTERS = Counter(
    "sms_replies_sink_dead_letters_total", "Records sent to the dead-letter topic.", ["sink"]
)
SINK_LAG = Gauge("sms_replies_sink_lag", "Replies not yet written, per sink.", ["sink"])
INGRESS_NON_UTF8_VALUES = Counter(
    "sms_replies_ingress_non_utf8_values_total",
    "Percent-encoded callback keys and values that were not UTF-8, read as Windows-1252.",
)
REJECTS_NOT_AUDITED = Counter(
    "sms_replies_rejects_not_audited_total",
    "Refused requests counted but not written to the rejects topic, by reason.",
    ["reason"],
)
