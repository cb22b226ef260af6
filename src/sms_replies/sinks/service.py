"""The sinks process: every configured sink with its own runner, health and metrics."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from aiohttp import web
from aiokafka import AIOKafkaProducer

from sms_replies.broker.admin import wait_for_topics
from sms_replies.broker.tansu import sink_fetch_max_wait_ms
from sms_replies.erasures import ErasureList
from sms_replies.metrics import add_metrics_route
from sms_replies.privacy import key_bytes
from sms_replies.settings import Settings
from sms_replies.sinks.registry import load_sink
from sms_replies.sinks.runner import SinkRunner, group_id

log = logging.getLogger(__name__)


async def serve_sinks(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``); each runner finishes its batch first."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiting = asyncio.create_task(
        wait_for_topics(
            settings.bootstrap,
            settings.topics,
            partitions=settings.topic_partitions,
            replication_factor=settings.replication_factor,
        )
    )
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():  # stopped before the broker ever answered
        waiting.cancel()
        return
    stopping.cancel()
    sinks = [load_sink(name).from_settings(settings) for name in settings.sinks]
    dead_letters = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await dead_letters.start()
    runners: list[SinkRunner] = []
    erasures = ErasureList(settings.data_dir, key_bytes(settings.pseudonymize_key))
    web_runner: web.AppRunner | None = None
    try:
        for sink in sinks:
            runners.append(
                SinkRunner(
                    sink,
                    bootstrap=settings.bootstrap,
                    topics=settings.topics,
                    group=group_id(settings.topic_prefix, sink.name),
                    batch_size=settings.sink_batch_size,
                    batch_timeout=settings.sink_batch_timeout,
                    dead_letters=dead_letters,
                    fetch_max_wait_ms=sink_fetch_max_wait_ms(settings.kafka_embedded),
                    erasures=erasures,
                )
            )
        web_runner = await _start_web(runners, settings)
        tasks = [asyncio.create_task(r.run(), name=f"sink-{r.sink.name}") for r in runners]
        log.info("sinks running: %s", ", ".join(settings.sinks))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for runner in runners:
            runner.stop()
        stopper.cancel()
        await asyncio.gather(*tasks)  # a crashed runner re-raises here
    finally:
        if web_runner is not None:
            await web_runner.cleanup()
        for sink in sinks:
            await sink.close()
        await dead_letters.stop()
        log.info("sinks stopped")


async def _start_web(runners: list[SinkRunner], settings: Settings) -> web.AppRunner:
    async def health(request: web.Request) -> web.Response:
        now = time.monotonic()
        body = {
            r.sink.name: {
                "written": r.progress.written,
                "dead_lettered": r.progress.dead_lettered,
                "failed_attempts": r.progress.failed_attempts,
                "lag": r.progress.lag,
                "last_error": r.progress.last_error,
                "seconds_since_last_write": (
                    None
                    if r.progress.last_write_monotonic is None
                    else round(now - r.progress.last_write_monotonic, 3)
                ),
            }
            for r in runners
        }
        failing = any(r.progress.last_error for r in runners)
        return web.json_response(body, status=503 if failing else 200)

    app = web.Application()
    app.router.add_get("/healthz", health)
    add_metrics_route(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, settings.sinks_web_host, settings.sinks_web_port).start()
    return runner
