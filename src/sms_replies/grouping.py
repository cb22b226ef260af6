"""Values written together, grouped into one record per partition (no I/O).

A consumer pays its per-record cost (Faust's: 90-110 us of CPU, docs/benchmarks.md)
once per record, and a producer pays aiokafka's per-send cost once per record.
The ingress groups the callbacks it accepts in the same moment per partition of
the raw topic (:class:`~sms_replies.records.RawGroup`: each callback still waits
for the acknowledgement of the record that carries it before it is answered);
the worker groups the replies of one batch per partition of the replies topic
(:class:`~sms_replies.records.ReplyGroup`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from sms_replies.records import RawGroup

#: Most values in one record: a record is handled whole by one event of its consumer.
MAX_GROUP_PARTS: Final = 500

#: The record of several encoded values (``RawGroup.encode_parts``, ``ReplyGroup.encode_replies``).
Envelope = Callable[[Sequence[bytes]], bytes]

W = TypeVar("W")


@dataclass(frozen=True, slots=True)
class Record(Generic[W]):
    """One record to send: its partition, key, value and who waits for it."""

    partition: int
    key: bytes
    value: bytes
    waiters: list[W]


@dataclass(slots=True)
class _Group(Generic[W]):
    first_key: bytes
    size: int
    values: list[bytes] = field(default_factory=list)
    waiters: list[W] = field(default_factory=list)


class PartitionGroups(Generic[W]):
    """Encoded values collected per partition, drained as records of at most ``max_bytes``.

    A value alone is its own record, as it always was; several are ``envelope``-d
    (the raw topic's :meth:`RawGroup.encode_parts` unless told otherwise).
    """

    def __init__(
        self,
        max_bytes: int,
        max_parts: int = MAX_GROUP_PARTS,
        envelope: Envelope = RawGroup.encode_parts,
    ) -> None:
        if max_parts < 1:
            raise ValueError("max_parts must be at least 1")
        self.max_bytes = max_bytes
        self.max_parts = max_parts
        self._envelope = envelope
        # What a group adds around its values (``{"v":1,"parts":[...]}``); a comma a value.
        self._overhead = len(envelope([]))
        self._full: list[Record[W]] = []
        self._open: dict[int, _Group[W]] = {}

    def __len__(self) -> int:
        """Parts waiting to be drained."""
        return sum(len(r.waiters) for r in self._full) + sum(
            len(g.waiters) for g in self._open.values()
        )

    def add(self, partition: int, key: bytes, value: bytes, waiter: W) -> None:
        """One encoded part for ``partition`` (its key decides the partition, and is kept
        as the record's key when the part travels alone)."""
        group = self._open.get(partition)
        if group is not None and (
            group.size + len(value) + 1 > self.max_bytes or len(group.values) >= self.max_parts
        ):
            self._full.append(self._record(partition, group))
            group = None
        if group is None:
            group = self._open[partition] = _Group(first_key=key, size=self._overhead)
        group.values.append(value)
        group.waiters.append(waiter)
        group.size += len(value) + 1

    def drain(self) -> list[Record[W]]:
        """Every record, in the order their first parts came per partition; empties this."""
        records = self._full + [self._record(p, g) for p, g in self._open.items()]
        self._full, self._open = [], {}
        return records

    def _record(self, partition: int, group: _Group[W]) -> Record[W]:
        # One value travels as a plain record (a RawPart, a Reply), as it always did.
        values = group.values
        value = values[0] if len(values) == 1 else self._envelope(values)
        return Record(partition, group.first_key, value, group.waiters)
