"""The pipeline health view asks every process, each worker process at its own port."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sms_replies.health import endpoints, worker_name
from sms_replies.settings import Settings


def test_one_worker_process_is_named_worker() -> None:
    settings = Settings.load(http_port=9000, worker_web_port=7000, sinks_web_port=7100)
    assert endpoints(settings) == {
        "ingest": "http://127.0.0.1:9000/readyz",
        "worker": "http://127.0.0.1:7000/healthz",
        "sinks": "http://127.0.0.1:7100/healthz",
    }


def test_every_worker_process_is_listed_at_its_own_port() -> None:
    settings = Settings.load(
        http_host="0.0.0.0",
        worker_web_host="::",
        http_port=9000,
        worker_web_port=7000,
        sinks_web_port=7100,
        worker_processes=3,
        worker_index=2,  # the asking process's own index does not matter
    )
    assert endpoints(settings) == {
        "ingest": "http://127.0.0.1:9000/readyz",
        "worker": "http://127.0.0.1:7000/healthz",
        "worker-1": "http://127.0.0.1:7001/healthz",
        "worker-2": "http://127.0.0.1:7002/healthz",
        "sinks": "http://127.0.0.1:7100/healthz",
    }
    # The supervisor names its children the same way.
    assert [worker_name(i) for i in range(3)] == ["worker", "worker-1", "worker-2"]


def test_worker_ports_that_meet_another_port_are_refused() -> None:
    with pytest.raises(ValidationError, match="overlap sinks_web_port"):
        Settings.load(worker_web_port=7000, worker_processes=3, sinks_web_port=7002)
    # The defaults leave room above the worker port for more processes.
    assert Settings.load(worker_processes=8).worker_processes == 8


def test_each_component_is_asked_at_its_own_address() -> None:
    settings = Settings.load(
        http_host="0.0.0.0",
        http_port=9000,
        worker_web_host="10.0.0.2",
        worker_web_port=7000,
        sinks_web_host="10.0.0.3",
        sinks_web_port=7100,
    )
    assert endpoints(settings) == {
        "ingest": "http://127.0.0.1:9000/readyz",
        "worker": "http://10.0.0.2:7000/healthz",
        "sinks": "http://10.0.0.3:7100/healthz",
    }


async def test_metrics_page_shows_this_process_registry_in_prometheus_format() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from sms_replies.metrics import add_metrics_route

    app = web.Application()
    add_metrics_route(app)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics")
        body = await response.text()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert "sms_replies_callbacks_total" in body
