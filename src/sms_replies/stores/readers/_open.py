"""``open_store``: the reader of a store URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sms_replies.stores.readers._base import DEFAULT_TIMEOUT, Reader
from sms_replies.stores.readers._clickhouse import ClickHouseReader
from sms_replies.stores.readers._duckdb import DuckDBReader
from sms_replies.stores.readers._postgres import PostgresReader
from sms_replies.stores.url import StoreURL


@contextmanager
def open_store(
    url: StoreURL, *, timeout: float = DEFAULT_TIMEOUT, write: bool = False
) -> Iterator[Reader]:
    """A reader of ``url``, closed on exit; keep it for one request or command only.

    ``write``: the connection may write (campaign declarations); DuckDB then
    creates the file.
    """
    reader: DuckDBReader | PostgresReader | ClickHouseReader
    if url.backend == "duckdb":
        reader = DuckDBReader(url, timeout=timeout, write=write)
    elif url.backend == "postgresql":
        reader = PostgresReader(url, timeout=timeout, write=write)
    else:
        reader = ClickHouseReader(url, timeout=timeout, write=write)
    try:
        yield reader
    finally:
        reader.close()
