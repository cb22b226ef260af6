"""Parquet sink: one file per batch and day, for data lakes and DuckDB/Spark readers.

Layout: ``<directory>/date=YYYY-MM-DD/part-<uuid>.parquet``, the day being the
UTC day of ``received_at`` (a batch spanning midnight writes one part per day).

**Atomic files.** A part is written to ``.part-<uuid>.parquet.tmp`` in the same
directory, fsynced, renamed with ``os.replace`` and the directory fsynced:
readers (who only match ``part-*.parquet``) see a whole part or none, even after
a crash. ``setup`` deletes temporary files an hour old (a crashed writer's).

**Idempotent by reply_id: the parts are the index.** Before writing a day's
replies the sink reads the ``reply_id`` column of that day's parts it has not
seen yet (kept in memory afterwards, so each part is read once per process) and
writes only the replies not stored yet; the first stored version wins. As a
part exists whole or not at all, a batch replayed after a crash finds exactly
what the first try stored. There is no separate index file that could
disagree with the data.

**A bounded index.** The days' indexes are kept least recently used first; after
each batch, whole days are dropped from memory until at most ``INDEX_MAX_IDS``
reply_ids are held. A dropped day is read again from its parts the next time a
reply of that day comes (a late replay, a provider retry): idempotence never
depends on what memory still holds, only the cost of that re-read does.

That guarantees one row per reply_id while one process writes the directory,
which the runner's consumer group gives outside a rebalance. Two processes
writing the same reply in the same instant (a rebalance overlap) can both store
it, so **readers use the view** of :func:`view_sql`, which keeps the first row
per reply_id (``DISTINCT ON (reply_id) ... ORDER BY ingested_at``).

Small parts accumulate (one per batch and day); compacting them is left to the
reader's tooling.

Settings (``SMS_REPLIES_PARQUET_*``): ``DIRECTORY`` (default
``<data_dir>/parquet``), ``COMPRESSION`` (default ``zstd``), ``INDEX_MAX_IDS``
(default 500,000: about 60 MB of reply_ids).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Self

import pyarrow as pa
import pyarrow.parquet as pq

from sms_replies.errors import SinkWriteError
from sms_replies.files import fsync_directory
from sms_replies.records import Reply
from sms_replies.schema import (
    ROW_ERRORS,
    to_columns,
    to_row,
    unique_by_id,
    utc_from_ms,
)
from sms_replies.sinks.base import Sink, SinkContext
from sms_replies.stores.duckdb import ARROW_SCHEMA
from sms_replies.stores.parquet import PART_GLOB, ParquetSettings, day_directory, view_sql

log = logging.getLogger(__name__)

_STALE_TMP_SECONDS = 3600.0

#: The settings' old name (the layout and settings live in :mod:`sms_replies.stores.parquet`).
ParquetSinkSettings = ParquetSettings

__all__ = ["PART_GLOB", "ParquetSink", "ParquetSinkSettings", "day_directory", "view_sql"]


@dataclass
class _DayIndex:
    """reply_ids stored in one day's directory, and the parts already read for them."""

    parts: set[str] = field(default_factory=set)
    reply_ids: set[str] = field(default_factory=set)


class ParquetSink(Sink):
    name = "parquet"

    def __init__(
        self, directory: Path, *, compression: str = "zstd", index_max_ids: int = 500_000
    ) -> None:
        self.directory = directory
        self.compression = compression
        self.index_max_ids = index_max_ids
        self._index: OrderedDict[date, _DayIndex] = OrderedDict()  # least recently used first
        self._lock = asyncio.Lock()  # the index is not safe for concurrent writes

    @classmethod
    def from_settings(cls, settings: SinkContext) -> Self:
        own = ParquetSinkSettings()
        return cls(
            own.directory or settings.data_dir / "parquet",
            compression=own.compression,
            index_max_ids=own.index_max_ids,
        )

    @property
    def indexed_ids(self) -> int:
        """reply_ids held in memory now."""
        return sum(len(index.reply_ids) for index in self._index.values())

    @property
    def indexed_days(self) -> list[date]:
        """Days whose index is held, least recently used first."""
        return list(self._index)

    async def setup(self) -> None:
        try:
            await asyncio.to_thread(self._setup)
        except OSError as exc:
            raise SinkWriteError(f"parquet setup failed: {exc}", retriable=True) from None

    def _setup(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - _STALE_TMP_SECONDS
        for stale in self.directory.glob("date=*/.part-*.parquet.tmp"):
            if stale.stat().st_mtime < cutoff:
                log.warning("parquet sink: removing a crashed writer's %s", stale)
                stale.unlink(missing_ok=True)
        log.info("parquet sink ready at %s", self.directory)

    async def write(self, batch: Sequence[Reply]) -> None:
        by_day: dict[date, list[Reply]] = defaultdict(list)
        ingested_at = datetime.now(UTC)
        try:
            for reply in unique_by_id(batch):
                to_row(reply, ingested_at)  # before any I/O: what fails here is the data
                by_day[utc_from_ms(reply.received_at_ms).date()].append(reply)
        except ROW_ERRORS as exc:
            raise SinkWriteError(f"replies not writable: {exc}", retriable=False) from None
        async with self._lock:
            try:
                written = await asyncio.to_thread(self._write, by_day, ingested_at)
            except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError) as exc:
                raise SinkWriteError(
                    f"parquet cannot encode the batch: {exc}", retriable=False
                ) from None
            except (OSError, pa.ArrowException) as exc:
                raise SinkWriteError(f"parquet write failed: {exc}", retriable=True) from None
        log.debug("parquet sink: %d new replies written", written)

    def _write(self, by_day: dict[date, list[Reply]], ingested_at: datetime) -> int:
        # Encode every day first: a reply Arrow rejects fails the batch before any file.
        tables: dict[date, tuple[list[str], pa.Table]] = {}
        for day, replies in by_day.items():
            index = self._day_index(day)
            new = [reply for reply in replies if reply.reply_id not in index.reply_ids]
            if new:
                table = pa.Table.from_pydict(to_columns(new, ingested_at), schema=ARROW_SCHEMA)
                tables[day] = ([reply.reply_id for reply in new], table)
        for day, (reply_ids, table) in tables.items():
            part = self._write_part(day_directory(self.directory, day), table)
            index = self._index[day]
            index.parts.add(part)
            index.reply_ids.update(reply_ids)
        self._evict()
        return sum(len(reply_ids) for reply_ids, _ in tables.values())

    def _evict(self) -> None:
        """Forget least recently used days until at most index_max_ids are held.

        The batch's own days may go too (a day larger than the bound): they are
        read again from their parts when needed, so memory stays bounded.
        """
        held = self.indexed_ids
        while held > self.index_max_ids and self._index:
            day, index = self._index.popitem(last=False)
            held -= len(index.reply_ids)
            log.debug("parquet sink: index of %s dropped from memory", day)

    def _day_index(self, day: date) -> _DayIndex:
        """The day's stored reply_ids, reading only the parts not seen yet."""
        index = self._index.pop(day, None) or _DayIndex()
        self._index[day] = index  # most recently used
        folder = day_directory(self.directory, day)
        if folder.is_dir():
            for path in folder.glob("part-*.parquet"):
                if path.name not in index.parts:
                    ids = pq.read_table(path, columns=["reply_id"]).column(0).to_pylist()
                    index.reply_ids.update(ids)
                    index.parts.add(path.name)
        return index

    def _write_part(self, folder: Path, table: pa.Table) -> str:
        created = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{uuid.uuid4().hex}.parquet"
        temporary = folder / f".{name}.tmp"
        try:
            with temporary.open("wb") as out:
                pq.write_table(table, out, compression=self.compression)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, folder / name)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_directory(folder)
        if created:
            fsync_directory(folder.parent)
        return name

    async def close(self) -> None:
        self._index.clear()  # nothing held open between batches
