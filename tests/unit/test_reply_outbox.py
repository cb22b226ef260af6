"""The worker's replies, grouped per partition of the replies topic (streams.outbox): no broker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from sms_replies.records import RawPart, Reply, decode_replies
from sms_replies.streams.outbox import ReplyOutbox
from sms_replies.streams.reassembly import accept


def _reply(sender: str, text: str) -> Reply:
    part = RawPart("long_number", sender, None, text, f"m-{sender}", "text", 1_700_000_000_000)
    (reply,) = accept(None, part).replies
    return reply


class Topic:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.asked = 0
        self.records: list[tuple[int, bytes, bytes]] = []

    async def read_partitions(self) -> Sequence[int]:
        self.asked += 1
        return list(range(self.partitions))[::-1]  # any order: the outbox sorts them

    async def send(self, partition: int, key: bytes, value: bytes) -> None:
        self.records.append((partition, key, value))


senders = st.lists(st.from_regex(r"\A\+336[0-9]{8}\Z"), min_size=1, max_size=60, unique=True)


@given(senders=senders, partitions=st.integers(1, 8), max_bytes=st.integers(600, 20_000))
def test_each_reply_once_on_the_partition_its_key_gives_alone(
    senders: list[str], partitions: int, max_bytes: int
) -> None:
    topic = Topic(partitions)
    outbox = ReplyOutbox(max_bytes=max_bytes, partitions=topic.read_partitions, send=topic.send)
    replies = [_reply(sender, "Oui " * 20) for sender in senders]

    async def batch() -> None:
        for reply in replies:
            await outbox.add(reply)
        assert topic.records == []  # nothing leaves before the batch's end
        assert len(outbox) == len(replies)
        await outbox.flush()

    asyncio.run(batch())
    assert len(outbox) == 0
    sent = [(p, r) for p, _, value in topic.records for r in decode_replies(value)]
    assert sorted(r.reply_id for _, r in sent) == sorted(r.reply_id for r in replies)
    for partition, reply in sent:  # aiokafka's own partitioner, not ours
        expected = (aiokafka_murmur2(reply.reply_id.encode()) & 0x7FFFFFFF) % partitions
        assert partition == expected
    for _, key, value in topic.records:
        assert len(value) <= max_bytes
        assert key == decode_replies(value)[0].reply_id.encode()
    # Replies of one partition in the order they came.
    for partition in range(partitions):
        here = [r.reply_id for p, r in sent if p == partition]
        assert here == [r.reply_id for r in replies if r.reply_id in set(here)]
    assert topic.asked == 1


async def test_replies_of_one_partition_travel_together_and_a_lone_one_plainly() -> None:
    topic = Topic(1)
    outbox = ReplyOutbox(max_bytes=100_000, partitions=topic.read_partitions, send=topic.send)
    first = [_reply(f"+3361234{n:04d}", "Oui") for n in range(30)]
    for reply in first:
        await outbox.add(reply)
    await outbox.flush()
    [(_, _, value)] = topic.records
    assert decode_replies(value) == first
    lone = _reply("+33699999999", "Non")
    await outbox.add(lone)
    await outbox.flush()
    assert topic.records[-1][2] == lone.encode()
    await outbox.flush()  # nothing left: nothing sent
    assert len(topic.records) == 2
