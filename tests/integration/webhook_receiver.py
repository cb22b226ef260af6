"""A webhook receiver on a real local port, doing what docs/webhook.md tells receivers to do.

It runs its own event loop in a thread, so the sink under test can live in the
test's loop or in a child process alike. It verifies each signature, keeps the
first version of each reply_id from the requests it accepted, and records every
request. ``plan`` scripts how it fails: one action per request, then it accepts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from sms_replies.sinks.webhook_protocol import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    signature_is_valid,
)


@dataclass(frozen=True)
class Fail:
    """Answer ``status`` (with ``Retry-After`` if given)."""

    status: int
    retry_after: str | None = None


@dataclass(frozen=True)
class Hang:
    """Answer nothing for ``seconds`` (the sender's timeout fires first), then 503."""

    seconds: float


@dataclass
class Delivery:
    at: float  # time.monotonic() when the request arrived
    key: str | None
    signature_ok: bool
    reply_ids: list[str]
    status: int | None  # None: the receiver hung


@dataclass
class Receiver:
    secret: bytes
    path: str = "/hooks/in"
    plan: list[Fail | Hang] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # a request holding one of these: 400
    deliveries: list[Delivery] = field(default_factory=list)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)  # first version wins
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    def start(self) -> str:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup() if self._runner else _noop())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="webhook-receiver", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError("receiver did not start")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}{self.path}"

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.read()
        signature_ok = signature_is_valid(body, request.headers.get(SIGNATURE_HEADER), self.secret)
        items: list[dict[str, Any]] = orjson.loads(body)["replies"] if signature_ok else []
        ids = [item["reply_id"] for item in items]
        with self._lock:
            action = self.plan.pop(0) if self.plan and signature_ok else None
        delivery = Delivery(arrived, request.headers.get(IDEMPOTENCY_HEADER), signature_ok, ids, 0)
        self.deliveries.append(delivery)
        if not signature_ok:
            delivery.status = 401
            return web.Response(status=401)
        if self.refuse & set(ids):
            delivery.status = 400
            return web.Response(status=400, text="refused")
        if isinstance(action, Hang):
            delivery.status = None
            await asyncio.sleep(action.seconds)
            return web.Response(status=503)
        if isinstance(action, Fail):
            delivery.status = action.status
            headers = {"Retry-After": action.retry_after} if action.retry_after else {}
            return web.Response(status=action.status, headers=headers)
        with self._lock:
            for item in items:
                self.stored.setdefault(item["reply_id"], item)
        delivery.status = 200
        return web.Response(status=200)


async def _noop() -> None:
    return None
