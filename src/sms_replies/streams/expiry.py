"""Which keys are due for expiry, per partition: a min-heap of deadlines (pure).

The table is the truth; this index only says where to look. Entries are never
removed when a key changes: a popped entry is re-checked against the table
(:func:`~sms_replies.streams.reassembly.expire_due` is a no-op before the
deadline) and the key rescheduled. After a restart or a rebalance, the
partitions' indexes are rebuilt from the table once, on the first tick of any of
them: one scan of the table for every partition not indexed yet.
So each tick costs O(due keys · log n), not a scan of every pending message.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class ExpiryIndex:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, bytes]]] = {}

    def is_indexed(self, partition: int) -> bool:
        return partition in self._heaps

    def rebuild(self, partition: int, deadlines: Iterable[tuple[bytes, int]]) -> None:
        heap = [(deadline, key) for key, deadline in deadlines]
        heapq.heapify(heap)
        self._heaps[partition] = heap

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions taken away by a rebalance: rebuild them if they come back."""
        for partition in partitions:
            self._heaps.pop(partition, None)

    def schedule(self, partition: int, key: bytes, deadline_ms: int) -> None:
        heap = self._heaps.get(partition)
        if heap is not None:  # an unindexed partition is rebuilt from the table anyway
            heapq.heappush(heap, (deadline_ms, key))

    def pop_due(self, partition: int, now_ms: int) -> list[bytes]:
        """Keys whose deadline is at or before ``now_ms`` (each once)."""
        heap = self._heaps.get(partition, [])
        due: set[bytes] = set()
        while heap and heap[0][0] <= now_ms:
            due.add(heapq.heappop(heap)[1])
        return sorted(due)

    def __len__(self) -> int:
        return sum(len(heap) for heap in self._heaps.values())
