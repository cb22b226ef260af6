"""Sinks: write complete replies to analytics storage. The one import for sink authors.

A sink implements :class:`Sink` (one ``write(batch)``); :mod:`.runner` feeds it
batches from the replies topic with its own consumer group and commits offsets
only after the batch is written. Third-party sinks register under the
``sms_replies.sinks`` entry-point group (see ``docs/sinks.md``).

Everything a sink needs is importable from here (``__all__``): the base class,
the record it receives (:class:`Reply`), the errors to raise, the columns of a
row and the helpers that build rows. The test kit is :mod:`.testing`.
Where to look next: :mod:`.base` (the guarantees), :mod:`sms_replies.schema`
(the columns), :mod:`.duckdb` (a built-in sink to copy from),
:mod:`sms_replies.stores` (connecting, tables and writes per database, the
opt-out list's upsert) if your sink writes to DuckDB, PostgreSQL or ClickHouse.
"""

from sms_replies.errors import ConfigError, SinkWriteError, SmsRepliesError
from sms_replies.records import Reply
from sms_replies.schema import (
    COLUMN_NAMES,
    COLUMNS,
    ROW_ERRORS,
    TABLE,
    Column,
    LogicalType,
    to_columns,
    to_row,
    unique_by_id,
    utc_from_ms,
)
from sms_replies.settings import Settings
from sms_replies.sinks.base import Sink, SinkContext
from sms_replies.sinks.registry import available_sinks, load_sink

__all__ = [
    "COLUMNS",
    "COLUMN_NAMES",
    "ROW_ERRORS",
    "TABLE",
    "Column",
    "ConfigError",
    "LogicalType",
    "Reply",
    "Settings",
    "Sink",
    "SinkContext",
    "SinkWriteError",
    "SmsRepliesError",
    "available_sinks",
    "load_sink",
    "to_columns",
    "to_row",
    "unique_by_id",
    "utc_from_ms",
]
