"""The conformance kit for sink authors: a pytest plugin (entry point ``pytest11``).

Subclass :class:`SinkConformance` in a test module and override its fixtures::

    class TestMySink(SinkConformance):
        @pytest.fixture
        def sink(self, sink_settings):          # an instance, not set up yet
            return MySink.from_settings(sink_settings)

        @pytest.fixture
        def read_back(self, sink):              # every stored row, duplicates included
            async def rows():
                return [...]                    # list of dicts, column name -> value
            return rows

        @pytest.fixture
        def broken_sink(self, ...):             # optional: a sink whose store is down
            ...

The kit's tests are ``async`` and marked ``pytest.mark.asyncio``: install
pytest-asyncio. They create and close the sink themselves (no async fixtures),
so the kit works in pytest-asyncio's strict and auto modes alike.

Importing this module has no side effect beyond defining the classes, helper
functions and the ``sink_settings`` fixture: pytest loads it in every run of
every project that installed sms-replies.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sms_replies.errors import SinkWriteError
from sms_replies.records import Reply
from sms_replies.schema import COLUMN_NAMES, COLUMNS, to_row
from sms_replies.settings import Settings
from sms_replies.sinks.base import Sink

log = logging.getLogger(__name__)

#: An async callable returning every stored row (column name -> value) as the
#: store's documented read interface returns them; repeated reply_ids included.
ReadBack = Callable[[], Awaitable[list[dict[str, Any]]]]

BASE_MS = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z: has milliseconds on purpose
_DAY_MS = 86_400_000
#: A provider's message-timestamp: whole seconds, a little before BASE_MS.
PROVIDER_SENT_MS = (BASE_MS // 1000 - 7) * 1000

# Columns a store may keep at a coarser precision (ClickHouse 18.16: whole seconds).
TIMESTAMP_COLUMNS = tuple(
    c.name for c in COLUMNS if c.type == "timestamp" and c.name != "ingested_at"
)


# -- synthetic replies ---------------------------------------------------------


def make_reply(number: int, *, day: int = 0, prefix: str = "r", **changes: Any) -> Reply:
    """A plausible complete reply; ``day`` shifts received_at by whole days."""
    reply = Reply(
        reply_id=f"{prefix}-{number:09d}",
        channel="long_number",
        sender=f"+3361{number % 10**8:08d}",
        recipient="+33756781234",
        text=f"Oui merci, réponse n°{number}",
        keyword="OUI",
        is_stop=False,
        stop_source=None,
        parts_expected=1,
        parts_received=1,
        complete=True,
        received_at_ms=BASE_MS + day * _DAY_MS + number,
        provider_message_ids=(f"0200000{number:010d}",),
    )
    return dataclasses.replace(reply, **changes) if changes else reply


def make_replies(count: int, *, start: int = 0, days: int = 1, prefix: str = "r") -> list[Reply]:
    """``count`` distinct replies spread over ``days`` days of received_at."""
    return [make_reply(n, day=n % days, prefix=prefix) for n in range(start, start + count)]


def awkward_replies() -> list[Reply]:
    """Replies exercising every column: nulls, stops, multipart, quoting, unicode."""
    return [
        make_reply(1, provider_sent_at_ms=PROVIDER_SENT_MS, campaign="spring-A", tag="wave 2"),
        make_reply(
            2,
            channel="short_number",
            recipient=None,
            text="STOP",
            keyword="STOP",
            is_stop=True,
            stop_source="provider",
        ),
        make_reply(
            3,
            text="Arrêtez svp 🙏 « merci »",
            keyword="ARRETEZ",
            is_stop=True,
            stop_source="text",
            day=1,
            provider_sent_at_ms=PROVIDER_SENT_MS + _DAY_MS,
            campaign='a "quoted" \\ campaign,;',
        ),
        make_reply(
            4,
            text='a,b;"quoted"\ttab\nnew line \\ backslash \'single\' {"json": [1]}',
            keyword="A",
            parts_expected=3,
            parts_received=2,
            complete=False,
            provider_message_ids=("p-1", "p-2"),
        ),
        make_reply(
            5,
            text="",
            keyword="",
            parts_expected=2,
            parts_received=2,
            provider_message_ids=("x", "y, z", 'q"uote'),
        ),
        make_reply(6, text="日本語のテキスト" * 40, keyword="日本語のテキスト", day=-1),
    ]


# -- comparing rows ------------------------------------------------------------


def expected_row(reply: Reply) -> dict[str, Any]:
    """The row a sink must store for ``reply``, without ingested_at (set by the sink)."""
    row = dict(zip(COLUMN_NAMES, to_row(reply, datetime.now(UTC)), strict=True))
    del row["ingested_at"]
    return row


def floor_time(value: datetime, precision: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((value - epoch) // precision) * precision


def normalise(row: dict[str, Any], precision: timedelta) -> dict[str, Any]:
    """A stored row in plain Python types, so that every store compares alike."""
    out: dict[str, Any] = {}
    for column in COLUMNS:
        if column.name not in row:
            raise AssertionError(f"column {column.name!r} missing from {sorted(row)}")
        value = row[column.name]
        if value is None:
            out[column.name] = None
        elif column.type == "timestamp":
            stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
            out[column.name] = floor_time(stamp.astimezone(UTC), precision)
        elif column.type == "boolean":
            out[column.name] = bool(value)
        elif column.type == "integer":
            out[column.name] = int(value)
        elif column.type == "text[]":
            out[column.name] = [str(item) for item in value]
        else:
            out[column.name] = value
    return out


# -- the kit -------------------------------------------------------------------


class SinkConformance:
    """Tests every sink must pass. Override ``sink`` and ``read_back`` (see module doc).

    Optional fixtures: ``broken_sink`` (a sink whose store is unavailable, for the
    outage test) and ``rejected_reply`` (a reply the store refuses, for the
    poison test); without them those tests skip and say why.
    """

    #: Finest time unit the store keeps; stored and expected times are floored to it.
    timestamp_precision: ClassVar[timedelta] = timedelta(microseconds=1)

    @pytest.fixture
    def sink(self) -> Sink:
        raise NotImplementedError("override the `sink` fixture: an instance, not set up")

    @pytest.fixture
    def read_back(self) -> ReadBack:
        raise NotImplementedError("override the `read_back` fixture: async () -> list[dict]")

    @pytest.fixture
    def broken_sink(self) -> Sink | None:
        return None

    @pytest.fixture
    def rejected_reply(self) -> Reply | None:
        return None

    # helpers -------------------------------------------------------------------

    async def stored(self, read_back: ReadBack) -> dict[str, dict[str, Any]]:
        """Stored rows by reply_id; fails if any reply_id is stored more than once."""
        rows = await read_back()
        counts = Counter(row["reply_id"] for row in rows)
        repeated = {reply_id: n for reply_id, n in counts.items() if n > 1}
        assert not repeated, f"reply_ids stored more than once: {dict(list(repeated.items())[:5])}"
        return {row["reply_id"]: normalise(row, self.timestamp_precision) for row in rows}

    def assert_rows(self, stored: dict[str, dict[str, Any]], expected: Sequence[Reply]) -> None:
        want = {reply.reply_id: expected_row(reply) for reply in expected}
        assert sorted(stored) == sorted(want)
        for reply_id, row in want.items():
            got = dict(stored[reply_id])
            got.pop("ingested_at")
            for column in TIMESTAMP_COLUMNS:
                if row.get(column) is not None:
                    row[column] = floor_time(row[column], self.timestamp_precision)
            assert got == row, f"row {reply_id} differs"

    # tests ---------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_setup_is_idempotent(self, sink: Sink, read_back: ReadBack) -> None:
        batch = awkward_replies()
        try:
            await sink.setup()
            await sink.setup()
            await sink.write(batch)
            await sink.setup()  # on a table that holds data: must keep it
            await sink.write(make_replies(3, start=100))
        finally:
            await sink.close()
        self.assert_rows(await self.stored(read_back), [*batch, *make_replies(3, start=100)])

    @pytest.mark.asyncio
    async def test_write_then_read_back_exact_rows(self, sink: Sink, read_back: ReadBack) -> None:
        batch = awkward_replies()
        before = datetime.now(UTC)
        async with sink:
            await sink.write(batch)
        after = datetime.now(UTC)
        stored = await self.stored(read_back)
        self.assert_rows(stored, batch)
        low = floor_time(before, self.timestamp_precision) - self.timestamp_precision
        for reply_id, row in stored.items():
            assert low <= row["ingested_at"] <= after, f"ingested_at of {reply_id}"

    @pytest.mark.asyncio
    async def test_same_batch_twice_is_one_row_each(self, sink: Sink, read_back: ReadBack) -> None:
        batch = make_replies(50, days=3)
        async with sink:
            await sink.write(batch)
            await sink.write(batch)  # the runner's replay after a crash before commit
            await sink.write(batch[10:20])
        self.assert_rows(await self.stored(read_back), batch)

    @pytest.mark.asyncio
    async def test_repeated_reply_id_in_one_batch_is_one_row(
        self, sink: Sink, read_back: ReadBack
    ) -> None:
        first = make_replies(5)
        again = [dataclasses.replace(reply, text="a later copy") for reply in first[:3]]
        async with sink:
            await sink.write([*first, *again, first[0]])
        self.assert_rows(await self.stored(read_back), first)

    @pytest.mark.asyncio
    async def test_first_stored_version_wins(self, sink: Sink, read_back: ReadBack) -> None:
        first = make_replies(10)
        changed = [dataclasses.replace(reply, text="changed", keyword="CHANGED") for reply in first]
        extra = make_replies(5, start=10)
        async with sink:
            await sink.write(first)
            await sink.write([*changed, *extra])
        self.assert_rows(await self.stored(read_back), [*first, *extra])

    @pytest.mark.asyncio
    async def test_many_batches_of_1000_all_present(self, sink: Sink, read_back: ReadBack) -> None:
        batches = [make_replies(1000, start=i * 1000, days=4) for i in range(5)]
        async with sink:
            for batch in batches:
                await sink.write(batch)
        stored = await self.stored(read_back)
        assert len(stored) == 5000
        assert set(stored) == {reply.reply_id for batch in batches for reply in batch}

    @pytest.mark.asyncio
    async def test_close_is_idempotent(self, sink: Sink, read_back: ReadBack) -> None:
        await sink.close()  # never set up: nothing to release, must not fail
        async with sink:
            await sink.write(make_replies(2))
        await sink.close()
        await sink.close()
        assert len(await self.stored(read_back)) == 2

    @pytest.mark.asyncio
    async def test_outage_is_retriable(self, broken_sink: Sink | None) -> None:
        if broken_sink is None:
            pytest.skip(
                "no `broken_sink` fixture: override it with a sink whose store is down "
                "(closed port, locked file...) to check outages raise "
                "SinkWriteError(retriable=True)"
            )
        try:
            setup_error: SinkWriteError | None = None
            try:
                await broken_sink.setup()
            except SinkWriteError as exc:
                setup_error = exc
            if setup_error is not None:
                assert setup_error.retriable, f"setup raised a final error: {setup_error}"
            with pytest.raises(SinkWriteError) as info:
                await broken_sink.write(make_replies(3))
            assert info.value.retriable, f"an outage must be retriable: {info.value}"
        finally:
            await broken_sink.close()

    @pytest.mark.asyncio
    async def test_rejected_data_is_not_retriable(
        self, sink: Sink, read_back: ReadBack, rejected_reply: Reply | None
    ) -> None:
        if rejected_reply is None:
            pytest.skip("no `rejected_reply` fixture: this store accepts every valid Reply")
        good = make_replies(3)
        async with sink:
            with pytest.raises(SinkWriteError) as info:
                await sink.write([*good, rejected_reply])
            assert not info.value.retriable, f"rejected data must not be retried: {info.value}"
            await sink.write(good)  # the runner then writes the rest of the batch
        self.assert_rows(await self.stored(read_back), good)


@pytest.fixture
def sink_settings(tmp_path: Path) -> Settings:
    """Process settings whose data_dir is the test's tmp_path."""
    return Settings.load(data_dir=tmp_path)


#: Old name ("contract" also names the records and the guarantees).
SinkContract = SinkConformance

__all__ = [
    "BASE_MS",
    "ReadBack",
    "SinkConformance",
    "SinkContract",
    "awkward_replies",
    "expected_row",
    "make_replies",
    "make_reply",
    "normalise",
]
