"""One batch of raw events against the Faust table: reads through, writes coalesced.

The worker handles raw records a batch at a time (``Stream.noack_take``). A key
touched several times in a batch (parts of one reply arriving close together,
as they do in real traffic) is written once, its last value, to the local store
and to the changelog.

Writes bypass ``Table.__setitem__``, whose per-write cost (a ``FutureMessage``
through Faust's producer buffer, then one RocksDB write of the persisted
changelog offset per acknowledged record) was a quarter of the worker's CPU.
:meth:`TableBatch.flush` does what it does, in bulk: store the value, send the
changelog record to the key's partition, and once a partition's last record of
the batch is acknowledged, persist that changelog offset once. Recovery and
standby replicas read the same changelog records as before.

Faust's Table and RocksDB store take the partition of a read or write from the
*current event*, so each access runs in the context of an event of that key's
partition (every key lives on one partition of the raw topic: any of its events
will do).
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from faust.streams import _current_event
from faust.types import TP

#: ``(partition, key, value or None for a delete)`` -> the record's delivery future.
SendChangelog = Callable[[int, bytes, bytes | None], Awaitable["asyncio.Future[Any]"]]


@contextmanager
def in_event(event: Any) -> Iterator[None]:
    """Run table accesses as if ``event`` were the stream's current event."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class TableBatch:
    """Coalesced access to a bytes-to-bytes Faust table for one batch of events."""

    def __init__(self, table: Any, send_changelog: SendChangelog) -> None:
        self._table = table
        self._send_changelog = send_changelog
        self._staged: dict[bytes, tuple[Any, bytes | None]] = {}

    def get(self, key: bytes, event: Any) -> bytes | None:
        if key in self._staged:
            return self._staged[key][1]
        # in_event(event) without the generator context manager: a read per part
        # of a long reply, and the context manager cost as much as the read (py-spy).
        token = _current_event.set(weakref.ref(event))
        try:
            value: bytes | None = self._table.data.get(key)
        finally:
            _current_event.reset(token)
        return value or None

    def set(self, key: bytes, value: bytes | None, event: Any) -> None:
        """Stage ``value`` for ``key`` (None deletes it); written by :meth:`flush`."""
        self._staged[key] = (event, value)

    async def flush(self) -> None:
        """Write each staged key once, store then changelog."""
        store = self._table.data
        last_sent: dict[int, asyncio.Future[Any]] = {}
        for key, (event, value) in self._staged.items():
            partition: int = event.message.partition
            token = _current_event.set(weakref.ref(event))  # in_event(event), inlined
            try:
                if value is None:
                    store.pop(key, None)
                else:
                    store[key] = value
            finally:
                _current_event.reset(token)
            last_sent[partition] = await self._send_changelog(partition, key, value)
        topic = self._table.changelog_topic.get_topic_name()
        for partition, future in last_sent.items():
            # Records of one partition are acknowledged in order: the last one
            # acknowledged means the store holds every earlier one too.
            persist = functools.partial(_persist_offset, store, TP(topic, partition))
            future.add_done_callback(persist)
        self._staged.clear()


def _persist_offset(store: Any, tp: TP, future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        store.set_persisted_offset(tp, future.result().offset)
