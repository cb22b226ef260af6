"""Callbacks accepted together, grouped into one raw record per partition (no I/O).

The worker pays Faust's per-record cost (90-110 us of CPU, docs/benchmarks.md)
once per record, and the ingress pays aiokafka's per-send cost once per record:
callbacks accepted in the same moment for the same partition travel as one
:class:`~sms_replies.records.RawGroup`. Each callback still waits for the
acknowledgement of the record that carries it before it is answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from sms_replies.records import RawGroup

#: Most callbacks in one record: a record is handled whole by one worker event.
MAX_GROUP_PARTS: Final = 500
#: What a group adds around its parts: ``{"v":1,"parts":[...]}`` and a comma a part.
_GROUP_OVERHEAD: Final = len(RawGroup.encode_parts([]))

W = TypeVar("W")


@dataclass(frozen=True, slots=True)
class Record(Generic[W]):
    """One raw record to send: its partition, key, value and who waits for it."""

    partition: int
    key: bytes
    value: bytes
    waiters: list[W]


@dataclass(slots=True)
class _Group(Generic[W]):
    first_key: bytes
    values: list[bytes] = field(default_factory=list)
    waiters: list[W] = field(default_factory=list)
    size: int = _GROUP_OVERHEAD


class PartitionGroups(Generic[W]):
    """Encoded parts collected per partition, drained as records of at most ``max_bytes``."""

    def __init__(self, max_bytes: int, max_parts: int = MAX_GROUP_PARTS) -> None:
        if max_parts < 1:
            raise ValueError("max_parts must be at least 1")
        self.max_bytes = max_bytes
        self.max_parts = max_parts
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
            self._full.append(_record(partition, group))
            group = None
        if group is None:
            group = self._open[partition] = _Group(first_key=key)
        group.values.append(value)
        group.waiters.append(waiter)
        group.size += len(value) + 1

    def drain(self) -> list[Record[W]]:
        """Every record, in the order their first parts came per partition; empties this."""
        records = self._full + [_record(p, g) for p, g in self._open.items()]
        self._full, self._open = [], {}
        return records


def _record(partition: int, group: _Group[W]) -> Record[W]:
    # One part travels as a plain RawPart record, as it always did.
    value = group.values[0] if len(group.values) == 1 else RawGroup.encode_parts(group.values)
    return Record(partition, group.first_key, value, group.waiters)
