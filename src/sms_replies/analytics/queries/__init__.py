"""Statistics over the ``replies`` table, one definition for every store.

Each query is written once with SQLAlchemy Core and compiled for the store the
:class:`~sms_replies.stores.readers.Reader` reads (DuckDB, PostgreSQL,
ClickHouse; :mod:`sms_replies.stores.dialects` holds the few constructs whose
SQL differs). Every value that comes from the caller travels as a bound
parameter; grouping keys and buckets are picked from fixed choices.

Definitions (``docs/analytics.md`` explains them for analysts):

- ``replies``: rows whose ``received_at`` is in [start, end).
- ``senders``: distinct ``sender`` numbers among them; ``stop_senders``: distinct
  senders of at least one STOP.
- ``stops`` / ``stop_share``: replies with ``is_stop``, and their share of replies.
- ``multipart`` / ``multipart_share``: replies announced as long SMS (``parts_expected > 1``).
- ``incomplete`` / ``incomplete_share``: replies with ``complete = false`` (a part
  never arrived before expiry), as a share of *all* replies.
- ``median_assembly_seconds``: median of (``last_part_at`` - ``received_at``), in
  seconds, over the long replies (``parts_expected > 1``) of which at least two
  parts arrived (complete or not): single messages, and long replies stored with
  one part only (an incomplete or late part alone), have no assembly time and do
  not count. Null when the range holds no such reply, and when the table predates
  the ``last_part_at`` column (``median_assembly_available`` is then false).
- Top keywords: the most frequent non-empty ``keyword`` values, with counts and
  their share of all replies (ties in byte order).

Campaigns (:mod:`sms_replies.analytics.campaigns`): a reply whose ``campaign``
column is set belongs to the campaign of that name only (declared or not); any
other reply belongs to each declared campaign whose window and number it
matches. Shares are null when there is no reply. A store without a ``replies``
table reads as empty.

The modules, each one thing (the names above are this package's; import them from
here):

- :mod:`._records`: the result records (``Stats``, ``Summary``, ``Timeseries``...)
  and ``to_plain``.
- :mod:`._view`: ``StoreView``, what one reader's store holds.
- :mod:`._membership`: which replies belong to a campaign (``declared_part``;
  ``campaign_masks_clickhouse``: as bits, for ClickHouse's campaign figures).
- :mod:`._aggregates`: the figures' columns and grouped rows.
- :mod:`._buckets`: time buckets and zone offsets.
- :mod:`._summary`, :mod:`._timeseries`, :mod:`._search`: the public queries.
"""

from sms_replies.analytics.queries._aggregates import (
    EMPTY_STATS,
    aggregates,
    median_condition,
    per_sender,
    row_stats,
    sender_sums,
)
from sms_replies.analytics.queries._buckets import bucket_starts
from sms_replies.analytics.queries._membership import (
    CLICKHOUSE_MASK_CAMPAIGNS,
    campaign_masks_clickhouse,
    declared_part,
)
from sms_replies.analytics.queries._records import (
    KeywordCount,
    Stats,
    Summary,
    Timeseries,
    share,
    to_plain,
)
from sms_replies.analytics.queries._search import (
    CURSOR_PATTERN,
    MAX_PAGE,
    ReplyFilter,
    ReplyPage,
    decode_cursor,
    encode_cursor,
    list_replies,
)
from sms_replies.analytics.queries._summary import summary, top_keywords
from sms_replies.analytics.queries._timeseries import timeseries
from sms_replies.analytics.queries._view import CAMPAIGNS_TABLE, LAST_PART_COLUMN, StoreView

__all__ = [
    "CAMPAIGNS_TABLE",
    "CLICKHOUSE_MASK_CAMPAIGNS",
    "CURSOR_PATTERN",
    "EMPTY_STATS",
    "LAST_PART_COLUMN",
    "MAX_PAGE",
    "KeywordCount",
    "ReplyFilter",
    "ReplyPage",
    "Stats",
    "StoreView",
    "Summary",
    "Timeseries",
    "aggregates",
    "bucket_starts",
    "campaign_masks_clickhouse",
    "declared_part",
    "decode_cursor",
    "encode_cursor",
    "list_replies",
    "median_condition",
    "per_sender",
    "row_stats",
    "sender_sums",
    "share",
    "summary",
    "timeseries",
    "to_plain",
    "top_keywords",
]
