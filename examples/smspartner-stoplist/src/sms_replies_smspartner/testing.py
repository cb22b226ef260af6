"""A local stand-in for SMS Partner's stop-list API, for tests: no test reaches the internet.

:class:`FakeSmsPartner` serves ``POST /v1/stop-sms/add`` on a real local port,
as :mod:`.protocol` quotes the documentation: a JSON body with ``apiKey`` and
``phoneNumber`` (national ``0X XX XX XX XX`` or international ``+...``; the
numbers in ``invalid`` are refused too, as the provider's own checks would);
``{"success": true, "code": 200, "stopId": N}`` when added; codes 1, 2, 3, 9, 10
otherwise, with HTTP ``error_status`` (the real one is not documented: 200
and 400 are both plausible). It keeps the list (numbers in international form)
and every request. ``plan`` scripts failures, one action per request, before
it answers normally: :class:`Fail` (a status, optionally ``Retry-After``) or
:class:`Hang` (no answer for a while, then 503).

It runs its own event loop in a thread, so the sink under test can live in the
test's loop or in a child process alike::

    with FakeSmsPartner(api_key="k") as api:
        sink = SmsPartnerStopListSink("k", base_url=api.base_url)
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web

from sms_replies_smspartner.protocol import (
    CODE_ALREADY_LISTED,
    CODE_INCORRECT_KEY,
    CODE_INVALID_NUMBER,
    CODE_KEY_REQUIRED,
    CODE_NUMBER_REQUIRED,
    CODE_OK,
    CODES,
)

_NATIONAL = re.compile(r"0[1-9][0-9]{8}")
_INTERNATIONAL = re.compile(r"\+[1-9][0-9]{6,14}")


@dataclass(frozen=True)
class Fail:
    """Answer ``status`` (with ``Retry-After`` if given) and change nothing."""

    status: int
    retry_after: str | None = None


@dataclass(frozen=True)
class Hang:
    """Answer nothing for ``seconds`` (the client's timeout fires first), then 503."""

    seconds: float


@dataclass
class Request:
    at: float  # time.monotonic() when it arrived
    api_key: str | None
    phone_number: str | None
    status: int | None  # None: hung
    code: int | None  # the provider's code answered


def international(number: str) -> str:
    """How the fake stores a number: ``0612345678`` -> ``+33612345678``."""
    return "+33" + number[1:] if _NATIONAL.fullmatch(number) else number


@dataclass
class FakeSmsPartner:
    api_key: str = "test-api-key"
    error_status: int = 400
    plan: list[Fail | Hang] = field(default_factory=list)
    invalid: set[str] = field(default_factory=set)  # numbers it answers code 9 for
    delay: float = 0.0  # seconds before each normal answer
    max_in_flight: int = 0  # most requests handled at once so far
    stop_list: dict[str, int] = field(default_factory=dict)  # number -> stopId
    requests: list[Request] = field(default_factory=list)
    base_url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _in_flight: int = 0

    def numbers(self) -> set[str]:
        with self._lock:
            return set(self.stop_list)

    def answered(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    async def _add(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            return await self._answer(request)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        body = await request.read()
        try:
            data: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        key = data.get("apiKey") if isinstance(data.get("apiKey"), str) else None
        number = data.get("phoneNumber") if isinstance(data.get("phoneNumber"), str) else None
        with self._lock:
            action = self.plan.pop(0) if self.plan else None
        if isinstance(action, Hang):
            self._record(Request(arrived, key, number, None, None))
            await asyncio.sleep(action.seconds)
            return web.Response(status=503)
        if isinstance(action, Fail):
            self._record(Request(arrived, key, number, action.status, None))
            headers = {"Retry-After": action.retry_after} if action.retry_after else {}
            return web.Response(status=action.status, text="unavailable", headers=headers)
        if not key:
            return self._error(arrived, key, number, CODE_KEY_REQUIRED)
        if key != self.api_key:
            return self._error(arrived, key, number, CODE_INCORRECT_KEY)
        if not number:
            return self._error(arrived, key, number, CODE_NUMBER_REQUIRED)
        valid = _NATIONAL.fullmatch(number) or _INTERNATIONAL.fullmatch(number)
        if not valid or international(number) in self.invalid:
            return self._error(arrived, key, number, CODE_INVALID_NUMBER)
        if self.delay:
            await asyncio.sleep(self.delay)
        stored = international(number)
        with self._lock:
            if stored in self.stop_list:
                already = True
            else:
                already = False
                self.stop_list[stored] = stop_id = 300 + len(self.stop_list)
        if already:
            return self._error(arrived, key, number, CODE_ALREADY_LISTED)
        self._record(Request(arrived, key, number, 200, CODE_OK))
        return web.json_response({"success": True, "code": CODE_OK, "stopId": stop_id})

    def _error(self, at: float, key: str | None, number: str | None, code: int) -> web.Response:
        self._record(Request(at, key, number, self.error_status, code))
        return web.json_response(
            {"success": False, "code": code, "message": CODES[code]}, status=self.error_status
        )

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def start(self) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/v1/stop-sms/add", self._add)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = self._runner.addresses[0][1]
            self.base_url = f"http://127.0.0.1:{port}/v1"

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-smspartner", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake SMS Partner did not start")

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
