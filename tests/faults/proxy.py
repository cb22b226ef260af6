"""A TCP proxy between the pipeline and the broker that can cut the connection.

:meth:`FaultProxy.cut` drops every proxied connection (RST) and closes the
listening socket, so new connections are refused (ECONNREFUSED) until
:meth:`FaultProxy.restore`. The broker advertises the proxy's address, so
every Kafka connection (bootstrap and per-broker) goes through it.

The proxy runs its own event loop in a thread: the harness may block (a
DuckDB read, a process start) without stalling broker traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_CHUNK = 256 * 1024


class FaultProxy:
    """Forward ``host:port`` to ``upstream``; ``port`` 0 picks a free one at :meth:`start`."""

    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream
        self.host = host
        self.port = port
        self.connections_total = 0
        self.connections_dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._down = False
        self._cuts = 0  # overlapping cuts: the last restore() reopens

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_down(self) -> bool:
        return self._down

    # -- control, from any thread -------------------------------------------

    def start(self) -> None:
        if self.port == 0:
            # Reserve the port now: the broker must advertise it before we forward.
            with socket.socket() as sock:
                sock.bind((self.host, 0))
                self.port = int(sock.getsockname()[1])
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"fault-proxy-{self.port}", daemon=True
        )
        self._thread.start()
        self._call(self._listen()).result(timeout=10)

    def stop(self) -> None:
        """Close everything and end the thread. Idempotent."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()

    async def cut(self) -> int:
        """Drop every connection and refuse new ones; returns how many were dropped."""
        self._cuts += 1
        return await asyncio.wrap_future(self._call(self._cut()))

    async def restore(self) -> None:
        """Accept connections again (once every overlapping cut is restored)."""
        self._cuts -= 1
        if self._cuts <= 0:
            self._cuts = 0
            await asyncio.wrap_future(self._call(self._listen()))

    def _call(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        if self._loop is None:
            coro.close()
            raise RuntimeError("proxy not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # -- inside the proxy's loop --------------------------------------------

    async def _listen(self) -> None:
        self._down = False
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, reuse_address=True, backlog=512
            )

    async def _cut(self) -> int:
        self._down = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        links = list(self._links)
        for client, upstream in links:
            client.transport.abort()
            upstream.transport.abort()
        self.connections_dropped += len(links)
        return len(links)

    async def _shutdown(self) -> None:
        await self._cut()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:
            log.warning("proxy: upstream %s unreachable: %s", self.upstream, exc)
            writer.transport.abort()
            return
        if self._down:  # cut while we were connecting
            writer.transport.abort()
            up_writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        if task is not None:
            self._tasks.add(task)
        self.connections_total += 1
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._links.discard(link)
            if task is not None:
                self._tasks.discard(task)
            writer.transport.abort()
            up_writer.transport.abort()


async def _pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    """Copy until either side closes; then close both (Kafka never half-closes)."""
    try:
        while data := await source.read(_CHUNK):
            target.write(data)
            await target.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            target.transport.abort()
