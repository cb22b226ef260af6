"""Replies per second the webhook sink forwards to a local receiver, per request size.

The receiver (aiohttp, its own thread and event loop, real loopback sockets)
does what docs/webhook.md asks: verifies the signature, parses the body and
keeps the first version per reply_id in memory. Each run writes ``rows``
distinct synthetic replies in sink batches of 1,000 (the default
``SMS_REPLIES_SINK_BATCH_SIZE``), timing the ``write`` calls only. A real
receiver that writes to a database answers slower: this is the sink's ceiling.

    python -m benchmarks.webhook
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
from aiohttp import web
from rich.console import Console
from rich.table import Table

from sms_replies.sinks.testing import make_replies
from sms_replies.sinks.webhook import WebhookSink
from sms_replies.sinks.webhook_protocol import SIGNATURE_HEADER, signature_is_valid

SECRET = b"benchmark-secret-0123456789"
REQUEST_SIZES = (50, 500)
SINK_BATCH = 1000


class _Receiver:
    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> _Receiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/in", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/in"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not signature_is_valid(body, request.headers.get(SIGNATURE_HEADER), SECRET):
            return web.Response(status=401)
        for item in orjson.loads(body)["replies"]:
            self.stored.setdefault(item["reply_id"], item)
        return web.Response(status=204)


async def _measure(url: str, rows: int, request_size: int) -> float:
    replies = make_replies(rows, prefix=f"bench{request_size}")
    sink = WebhookSink(url, SECRET, max_batch=request_size)
    elapsed = 0.0
    async with sink:
        for start in range(0, rows, SINK_BATCH):
            batch = replies[start : start + SINK_BATCH]
            began = time.perf_counter()
            await sink.write(batch)
            elapsed += time.perf_counter() - began
    return rows / elapsed


def run(rows: int = 20_000) -> list[dict[str, Any]]:
    """One figure per request size: {"request_size", "rows", "rows_per_s"}."""
    figures = []
    with _Receiver() as receiver:
        for size in REQUEST_SIZES:
            rate = asyncio.run(_measure(receiver.url, rows, size))
            figures.append({"request_size": size, "rows": rows, "rows_per_s": round(rate)})
        if len(receiver.stored) != rows * len(REQUEST_SIZES):
            raise RuntimeError(f"receiver holds {len(receiver.stored)} replies")
    return figures


def main() -> None:
    table = Table("replies per request", "replies", "replies/s")
    for figure in run():
        table.add_row(str(figure["request_size"]), str(figure["rows"]), f"{figure['rows_per_s']:,}")
    Console().print(table)


if __name__ == "__main__":
    main()
