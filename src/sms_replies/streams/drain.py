"""Faust's consumer hands each record to the streams without four tasks when nothing waits.

``Consumer._drain_messages`` delivers every fetched record through
``wait_first(callback(message), suspend_flow.wait())`` so that a rebalance
(``stop_flow`` sets ``suspend_flow``) can abort a delivery blocked on flow
control or a full stream buffer. That creates four tasks per record (the
callback, the flow event, the consumer's stopped and crashed events): about a
tenth of the worker's samples (py-spy, mixed load, docs/benchmarks.md).

Here the callback's first step runs at once, as its task's would have. Most
deliveries finish in it (nothing to wait for): no task at all. A delivery that
does wait continues, from where it stopped, under Faust's own ``wait_first``,
so a rebalance aborts it exactly as before. A flow already suspended takes
Faust's path from the start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from mode.services import WaitResults

WaitFirst = Callable[..., Awaitable[WaitResults]]


def fast_delivery(consumer: Any) -> None:
    """Give ``consumer`` (a Faust consumer) the fast path for its record deliveries."""
    consumer.wait_first = deliver_first(consumer.wait_first, consumer.suspend_flow)


def deliver_first(wait_first: WaitFirst, suspend_flow: asyncio.Event) -> WaitFirst:
    # Same signature as mode.Service.wait_first, which it stands in for.
    async def wait_first_or_done(*coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109
        if timeout is not None or len(coros) != 2 or not _waits_on(coros[1], suspend_flow):
            return await wait_first(*coros, timeout=timeout)
        delivery, flow = coros
        if suspend_flow.is_set():
            return await wait_first(delivery, flow)
        try:
            blocked_on = delivery.send(None)
        except StopIteration as done:
            flow.close()  # never started: closed, so no "never awaited" warning
            return WaitResults([delivery], [done.value], False)
        return await wait_first(_resume(delivery, blocked_on), flow)

    return wait_first_or_done


def _waits_on(coro: Any, event: asyncio.Event) -> bool:
    """Is ``coro`` ``event.wait()``, not started (the drain loop's second argument)?"""
    frame = getattr(coro, "cr_frame", None)
    return (
        frame is not None
        and getattr(coro, "cr_code", None) is asyncio.Event.wait.__code__
        and frame.f_locals.get("self") is event
    )


async def _resume(coro: Coroutine[Any, Any, Any], blocked_on: Any) -> Any:
    return await _Resumed(coro, blocked_on)


class _Resumed:
    """Awaits the rest of a coroutine already stepped once (it yielded ``blocked_on``)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], blocked_on: Any) -> None:
        self._coro = coro
        self._blocked_on = blocked_on

    def __await__(self) -> Generator[Any, Any, Any]:
        yielded = self._blocked_on
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # cancellation included: passed to the coroutine
                try:
                    yielded = self._coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    yielded = self._coro.send(sent)
                except StopIteration as done:
                    return done.value
