"""The four questions the scale benchmark times: the product's own functions, on every store.

- ``summary``: ``sms-replies stats`` over the last 30 days (totals, top keywords);
- ``timeseries``: hour buckets over the same 30 days (zone Europe/Paris);
- ``campaigns``: every campaign's figures (``sms-replies campaign stats``);
- ``search``: the newest 100 replies of one sender (``/api/replies?sender=``), the
  busiest sender (the most rows to sort).

Each call opens a reader of the store (:func:`sms_replies.stores.readers.open_store`)
and runs :mod:`sms_replies.analytics.queries` / :mod:`sms_replies.analytics.campaigns`
through it, as the CLI and each API request do.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta

from benchmarks.stores_synth import END, busiest_sender
from sms_replies.analytics import campaigns as product_campaigns
from sms_replies.analytics import queries as product
from sms_replies.analytics.params import StatsQuery
from sms_replies.stores.readers import Reader, open_store
from sms_replies.stores.url import StoreURL

Query = Callable[[], object]
Opener = Callable[[], AbstractContextManager[Reader]]
NAMES = ("summary", "timeseries", "campaigns", "search")
TZ = "Europe/Paris"
START = END - timedelta(days=30)
TIMEOUT = 300.0  # seconds: PostgreSQL's statement timeout comes from it


def product_queries(url: StoreURL, opener: Opener | None = None) -> dict[str, Query]:
    """The questions on ``url``; ``opener``: how to open a reader, when not :func:`open_store`
    (chdb's in-process engine)."""

    def open_reader() -> AbstractContextManager[Reader]:
        return opener() if opener is not None else open_store(url, timeout=TIMEOUT)

    summary_q = StatsQuery(start=START, end=END, tz=TZ)
    series_q = StatsQuery(start=START, end=END, tz=TZ, bucket="hour")
    search = product.ReplyFilter(sender=busiest_sender(), limit=100)

    def summary() -> object:
        with open_reader() as reader:
            return product.summary(reader, summary_q)

    def timeseries() -> object:
        with open_reader() as reader:
            return product.timeseries(reader, series_q)

    def campaigns() -> object:
        with open_reader() as reader:
            return product_campaigns.campaign_stats(reader)

    def replies() -> object:
        with open_reader() as reader:
            return product.list_replies(reader, search)

    return {"summary": summary, "timeseries": timeseries, "campaigns": campaigns, "search": replies}
