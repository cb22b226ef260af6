"""Record deliveries without tasks when nothing waits; a rebalance still aborts one that waits."""

from __future__ import annotations

import asyncio

from mode import Service

from sms_replies.streams.drain import fast_delivery


class Consumer(Service):
    """What the fast path touches of a Faust consumer: ``wait_first`` and ``suspend_flow``."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()
        self.tasks_created = 0
        fast_delivery(self)


async def test_a_delivery_that_does_not_wait_creates_no_task() -> None:
    consumer = Consumer()
    delivered: list[int] = []

    async def deliver(value: int) -> int:
        delivered.append(value)
        return value

    loop = asyncio.get_running_loop()
    before = len(asyncio.all_tasks(loop))
    results = await consumer.wait_first(deliver(1), consumer.suspend_flow.wait())
    assert delivered == [1]
    assert results.results == [1]
    assert not results.stopped
    assert len(asyncio.all_tasks(loop)) == before


async def test_a_waiting_delivery_finishes_under_wait_first() -> None:
    consumer = Consumer()
    room = asyncio.Event()
    steps: list[str] = []

    async def deliver() -> str:
        steps.append("started")
        await room.wait()  # a full stream buffer
        steps.append("delivered")
        return "ok"

    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert steps == ["started"]
    room.set()
    results = await waiting
    assert steps == ["started", "delivered"]
    assert results.results == ["ok"]


async def test_a_rebalance_aborts_a_waiting_delivery() -> None:
    consumer = Consumer()
    steps: list[str] = []

    async def deliver() -> None:
        steps.append("started")
        try:
            await asyncio.Event().wait()  # flow control: never resumed here
            steps.append("delivered")
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()  # Consumer.stop_flow(): a rebalance begins
    results = await asyncio.wait_for(waiting, 5)
    await asyncio.sleep(0.01)
    assert results.results == [True]  # only the flow event won
    assert steps == ["started", "cancelled"]


async def test_a_suspended_flow_takes_faust_path() -> None:
    consumer = Consumer()
    consumer.suspend_flow.set()
    steps: list[str] = []

    async def deliver() -> None:
        await asyncio.sleep(1)
        steps.append("delivered")

    results = await asyncio.wait_for(
        consumer.wait_first(deliver(), consumer.suspend_flow.wait()), 5
    )
    await asyncio.sleep(0.01)
    assert results.results == [True]  # only the flow event won
    assert steps == []
