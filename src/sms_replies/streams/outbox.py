"""The replies of one batch, written as one record per partition of the replies topic.

aiokafka's send costs the worker about a fifth of its CPU when each reply is a
record of its own (py-spy, docs/benchmarks.md), and every sink pays its
per-record cost for each one. The worker's batches hold up to a thousand
events: the replies they produce are collected here, placed where Kafka's
default partitioner would have put each alone (murmur2 of its ``reply_id``),
and sent at the end of the batch as :class:`~sms_replies.records.ReplyGroup`
records (a reply alone stays a plain reply record). The batch is acknowledged
only after that, as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from sms_replies.broker.partitioner import partition_of
from sms_replies.grouping import PartitionGroups
from sms_replies.records import Reply, ReplyGroup

#: Sends one record: (partition, key, value).
SendRecord = Callable[[int, bytes, bytes], Awaitable[object]]
#: The replies topic's partitions (asked once: they are fixed for the worker's life).
ReadPartitions = Callable[[], Awaitable[Sequence[int]]]


class ReplyOutbox:
    """Replies added during a batch; :meth:`flush` sends them, grouped per partition."""

    def __init__(self, *, max_bytes: int, partitions: ReadPartitions, send: SendRecord) -> None:
        self._groups: PartitionGroups[None] = PartitionGroups(
            max_bytes, envelope=ReplyGroup.encode_replies
        )
        self._read_partitions = partitions
        self._partitions: tuple[int, ...] = ()
        self._send = send

    def __len__(self) -> int:
        """Replies waiting for :meth:`flush`."""
        return len(self._groups)

    async def add(self, reply: Reply) -> None:
        partitions = self._partitions
        if not partitions:
            partitions = self._partitions = tuple(sorted(await self._read_partitions()))
        key = reply.reply_id.encode()
        # Kafka's default partitioner, as aiokafka would have placed the reply alone.
        partition = partitions[partition_of(key, len(partitions))]
        self._groups.add(partition, key, reply.encode(), None)

    async def flush(self) -> None:
        """Send every reply added since the last flush (the records' sends, not their acks)."""
        for record in self._groups.drain():
            await self._send(record.partition, record.key, record.value)
