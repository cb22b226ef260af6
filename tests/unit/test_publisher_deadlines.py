"""The ingress publisher fails deliveries not acknowledged in time (ingest.publisher)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from sms_replies.ingest.publisher import expire_deliveries


async def test_overdue_deliveries_fail_and_settled_ones_are_dropped() -> None:
    loop = asyncio.get_running_loop()
    acked, overdue, waiting = loop.create_future(), loop.create_future(), loop.create_future()
    acked.set_result(None)
    deadlines: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque(
        [(1.0, acked), (2.0, overdue), (5.0, waiting)]
    )
    assert expire_deliveries(deadlines, now=3.0) == 1
    with pytest.raises(KafkaTimeoutError):
        overdue.result()
    assert not waiting.done()
    assert list(deadlines) == [(5.0, waiting)]  # the scan stops at the first one in time


async def test_a_pending_delivery_in_time_keeps_later_ones() -> None:
    loop = asyncio.get_running_loop()
    first, later = loop.create_future(), loop.create_future()
    later.set_result(None)  # settled out of order: dropped once the front is
    deadlines: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque(
        [(5.0, first), (6.0, later)]
    )
    assert expire_deliveries(deadlines, now=1.0) == 0
    assert len(deadlines) == 2
    first.set_result(None)
    assert expire_deliveries(deadlines, now=1.0) == 0
    assert not deadlines


async def test_a_cancelled_delivery_is_not_failed_again() -> None:
    delivery = asyncio.get_running_loop().create_future()
    delivery.cancel()  # the callback's request went away
    deadlines: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque(
        [(1.0, delivery)]
    )
    assert expire_deliveries(deadlines, now=9.0) == 0
    assert not deadlines
