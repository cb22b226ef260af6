"""`sms-replies run` as a user starts it: embedded broker, all processes, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import psutil
import pytest

from sms_replies.broker.embedded import free_port
from sms_replies.streams.reassembly import KeyState
from sms_replies.worker_state import best_copies, find_copies, read_items
from tests.integration.conftest import read_rows, wait_ready
from tests.integration.test_worker_processes import free_port_run

pytestmark = pytest.mark.integration


TOKEN_SETTING = "SMS_REPLIES_CALLBACK_TOKEN"


def run_env(tmp_path: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {
        **os.environ,
        **{f"SMS_REPLIES_{name}_PORT": str(port) for name, port in ports.items()},
        "SMS_REPLIES_DATA_DIR": str(tmp_path / "data"),
        "SMS_REPLIES_CALLBACK_TOKEN": "t0ken",
        "SMS_REPLIES_SINK_BATCH_TIMEOUT": "0.2",
    }
    env.pop("SMS_REPLIES_KAFKA_BOOTSTRAP", None)
    return env


@pytest.mark.timeout(180)
async def test_run_accepts_callbacks_and_stops_without_losing_any(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("HTTP", "API", "WORKER_WEB", "SINKS_WEB")}
    env = run_env(tmp_path, ports)
    with (tmp_path / "run.log").open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "sms_replies", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        assert run.stdout is not None
        line = await asyncio.to_thread(run.stdout.readline)
        url = f"http://127.0.0.1:{ports['HTTP']}/callbacks/smspartner"
        # The token it was given is not shown back (banners end up in logs).
        expected = "sms-replies is running. Callback URL: "
        assert line.decode().strip() == f"{expected}{url}?token=<the token in {TOKEN_SETTING}>"
        url += "?token=t0ken"
        await wait_ready(f"http://127.0.0.1:{ports['API']}/health", timeout=60)
        async with aiohttp.ClientSession() as session:
            single = {
                "msisdn": "33612345678",
                "to": "33756781234",
                "messageId": "s1",
                "text": "Oui",
            }
            half = {
                "msisdn": "33612345678",
                "to": "33756781234",
                "messageId": "p1",
                "concat": "true",
                "concat-ref": "7",
                "concat-total": "2",
                "concat-part": "1",
                "text": "Je viens ",
            }
            stop = {"type": "stop", "phone_number": "+33699999999", "message_id": 5}
            for body in (single, half):
                async with session.post(url, data=body) as response:
                    assert response.status == 200
            async with session.post(url, json=stop) as response:
                assert response.status == 200
            # The analyst's views agree on what went through the pipeline.
            api = f"http://127.0.0.1:{ports['API']}/api/summary"
            for _ in range(100):
                async with session.get(api, params={"since": "1h"}) as response:
                    summary = await response.json()
                if summary["totals"]["replies"] == 2:
                    break
                await asyncio.sleep(0.2)
            cli = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "sms_replies", "stats", "--since", "1h", "--format", "json"],
                env=env,
                capture_output=True,
                check=True,
            )
            from_cli = json.loads(cli.stdout)
        totals = summary["totals"]
        assert (totals["replies"], totals["senders"], totals["stops"]) == (2, 2, 1)
        assert from_cli["totals"] == totals
    finally:
        run.send_signal(signal.SIGINT)  # Ctrl-C
        code = await asyncio.to_thread(run.wait, 90)
        assert run.stdout is not None
        run.stdout.close()
    assert code == 0
    rows = read_rows(tmp_path / "data" / "replies.duckdb")
    assert sorted((r["text"], r["complete"]) for r in rows) == [("", True), ("Oui", True)]
    # The half-received reply is not flushed as incomplete: it waits in the worker's state
    # on disk, which the next `run` gives back to its fresh broker (see test_power_cut.py).
    held = [
        KeyState.decode(value)
        for copy in best_copies(find_copies(tmp_path / "data" / "worker")).values()
        for _, value in read_items(copy.path)
    ]
    assert [[p.text for p in state.parts.values()] for state in held] == [["Je viens "]]
    # Its log went to a file: no terminal escape codes (Faust's spinner), Faust's tables
    # each on one line (every line a log record).
    log = (tmp_path / "run.log").read_text(errors="replace")
    assert "\x1b" not in log
    assert "OK ^" not in log
    assert [line for line in log.splitlines() if line.startswith(("+", "|"))] == []
    assert "active offsets at start of reading: topic partition offset;" in log


@pytest.mark.timeout(180)
async def test_run_starts_every_worker_process(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("HTTP", "API", "SINKS_WEB")}
    ports["WORKER_WEB"] = free_port_run(2)
    env = {**run_env(tmp_path, ports), "SMS_REPLIES_WORKER_PROCESSES": "2"}
    with (tmp_path / "run.log").open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "sms_replies", "run"], env=env, stdout=log, stderr=log
        )
    try:
        health = f"http://127.0.0.1:{ports['API']}/health"
        await wait_ready(health, timeout=60)
        async with aiohttp.ClientSession() as session, session.get(health) as response:
            components = (await response.json())["components"]
    finally:
        run.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(run.wait, 90)
    assert code == 0
    assert {name: c["up"] for name, c in components.items()} == {
        "ingest": True,
        "worker": True,
        "worker-1": True,
        "sinks": True,
        "broker": True,
    }
    text = (tmp_path / "run.log").read_text()
    assert "started worker (pid" in text
    assert "started worker-1 (pid" in text
    assert "it was killed" not in text  # every worker stopped on SIGTERM


def listening_sockets(root_pid: int) -> set[tuple[str, int, str]]:
    """(address, port, process name) of every TCP listener of a process tree, from /proc/net."""
    root = psutil.Process(root_pid)
    listeners: set[tuple[str, int, str]] = set()
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            for conn in process.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    listeners.add((conn.laddr.ip, conn.laddr.port, process.name()))
    return listeners


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


@pytest.mark.timeout(180)
async def test_with_the_ingress_on_every_interface_nothing_else_leaves_loopback(
    tmp_path: Path,
) -> None:
    ports = {name: free_port() for name in ("HTTP", "API", "WORKER_WEB", "SINKS_WEB")}
    env = {**run_env(tmp_path, ports), "SMS_REPLIES_HTTP_HOST": "0.0.0.0"}
    with (tmp_path / "run.log").open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "sms_replies", "run"], env=env, stdout=log, stderr=log
        )
    try:
        await wait_ready(f"http://127.0.0.1:{ports['API']}/health", timeout=60)
        listeners = listening_sockets(run.pid)
        async with aiohttp.ClientSession() as session:
            # Faust's table view would serve the reassembly state.
            tables = f"http://127.0.0.1:{ports['WORKER_WEB']}/table/pending/"
            async with session.get(tables) as response:
                table_status = response.status
    finally:
        run.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(run.wait, 90)
    assert code == 0
    listening_ports = {port for _, port, _ in listeners}
    # Every component was seen listening (the broker on a port of its own choosing).
    assert set(ports.values()) <= listening_ports
    assert any(name.startswith("tansu") for _, _, name in listeners), listeners
    public = {(address, port) for address, port, _ in listeners if not is_loopback(address)}
    assert public == {("0.0.0.0", ports["HTTP"])}, listeners
    assert table_status == 404


def start_run(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`sms-replies run` with its banner on a pipe and its log in ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sms_replies", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )


def stop_run(run: subprocess.Popen[bytes], timeout: float = 90) -> int:
    if run.poll() is None:
        run.send_signal(signal.SIGINT)
    try:
        return run.wait(timeout)
    finally:
        if run.poll() is None:  # a hung run must not outlive the test
            for child in psutil.Process(run.pid).children(recursive=True):
                child.kill()
            run.kill()
            run.wait()
        if run.stdout is not None:
            run.stdout.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("setting", "break_it"),
    [
        ("SMS_REPLIES_SINKS", "misspelt sink"),
        ("SMS_REPLIES_HTTP_PORT", "port in use"),
        ("SMS_REPLIES_SINKS_WEB_PORT", "port in use"),
    ],
)
async def test_a_bad_setting_ends_run_before_anything_starts(
    tmp_path: Path, setting: str, break_it: str
) -> None:
    ports = {name: free_port() for name in ("HTTP", "API", "WORKER_WEB", "SINKS_WEB")}
    env = run_env(tmp_path, ports)
    with contextlib.ExitStack() as held:
        if break_it == "misspelt sink":
            env[setting] = "duckdb,cvs"
        else:
            port = int(env[setting])
            held.enter_context(socket.create_server(("127.0.0.1", port)))  # someone else's
        run = start_run(env, tmp_path / "run.log")
        try:
            code = await asyncio.to_thread(run.wait, 60)
            assert run.stdout is not None
            banner = run.stdout.read().decode()
        finally:
            stop_run(run)
    text = (tmp_path / "run.log").read_text()
    assert code != 0
    assert banner == ""
    # One line naming the setting, no traceback, and nothing was started.
    assert text.startswith(f"Error: {setting}: "), text
    assert len(text.splitlines()) == 1, text
    assert "cvs" in text if break_it == "misspelt sink" else "already in use" in text


@pytest.mark.timeout(180)
async def test_the_banner_waits_for_the_worker_to_own_its_partitions(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("HTTP", "API", "WORKER_WEB", "SINKS_WEB")}
    run = start_run(run_env(tmp_path, ports), tmp_path / "run.log")
    try:
        assert run.stdout is not None
        banner = await asyncio.to_thread(run.stdout.readline)
        assert b"Callback URL" in banner
        async with aiohttp.ClientSession() as session:
            worker = f"http://127.0.0.1:{ports['WORKER_WEB']}/readyz"
            async with session.get(worker) as response:
                worker_status, worker_body = response.status, await response.json()
            ingress = f"http://127.0.0.1:{ports['HTTP']}/readyz"
            async with session.get(ingress) as response:
                ingress_status = response.status
    finally:
        code = await asyncio.to_thread(stop_run, run)
    assert code == 0
    assert (ingress_status, worker_status) == (200, 200)
    assert worker_body["partitions"] == list(range(8))  # one worker: every raw partition


@pytest.mark.timeout(180)
async def test_a_child_that_keeps_dying_at_start_ends_run_with_its_error(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("HTTP", "API", "WORKER_WEB", "SINKS_WEB")}
    env = run_env(tmp_path, ports)
    data = tmp_path / "data"
    data.mkdir()
    (data / "worker").write_text("not a directory")  # the worker cannot make its state dir
    run = start_run(env, tmp_path / "run.log")
    try:
        code = await asyncio.to_thread(run.wait, 120)
        assert run.stdout is not None
        banner = run.stdout.read().decode()
    finally:
        stop_run(run)
    text = (tmp_path / "run.log").read_text()
    assert code != 0
    assert banner == ""
    last = text.splitlines()[-1]
    assert last.startswith("Error: worker exited 3 times before the pipeline was ready"), last
    assert "NotADirectoryError" in last, last


def sinks_process(run: subprocess.Popen[bytes]) -> psutil.Process | None:
    for child in psutil.Process(run.pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.cmdline()[-1:] == ["sinks"] and child.status() != psutil.STATUS_ZOMBIE:
                return child
    return None


def ingress_alive(run: subprocess.Popen[bytes]) -> bool:
    for child in psutil.Process(run.pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.cmdline()[-1:] == ["ingest"] and child.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


async def until(predicate: Callable[[], bool]) -> None:
    while True:
        if predicate():
            return
        await asyncio.sleep(0.05)


def restarted(run: subprocess.Popen[bytes], old_pid: int) -> bool:
    sinks = sinks_process(run)
    return sinks is not None and sinks.pid != old_pid


@pytest.mark.timeout(240)
async def test_a_stop_during_a_restart_backoff_is_acted_on_at_once(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("HTTP", "API", "WORKER_WEB", "SINKS_WEB")}
    run = start_run(run_env(tmp_path, ports), tmp_path / "run.log")
    log_path = tmp_path / "run.log"
    try:
        assert run.stdout is not None
        await asyncio.to_thread(run.stdout.readline)  # the banner
        # Kill the sinks until their restart backoff is 4 s.
        for delay in (1, 2, 4):
            sinks = sinks_process(run)
            assert sinks is not None
            sinks.kill()
            await until(lambda d=delay: f"restarting in {d}s" in log_path.read_text())
            if delay < 4:
                await until(lambda old=sinks.pid: restarted(run, old))
        assert sinks_process(run) is None  # waiting for its backoff
        run.send_signal(signal.SIGINT)
        # The stop does not wait for the backoff: the ingress goes first, then the
        # sinks start again for the drain (before: sinks restarted, then the stop).
        while ingress_alive(run):
            assert sinks_process(run) is None, "sinks restarted before the ingress stopped"
            await asyncio.sleep(0.02)
    finally:
        code = await asyncio.to_thread(stop_run, run)
    assert code == 0
    assert "without its backoff, to drain" in log_path.read_text()


async def callback_status(url: str) -> int:
    single = {"msisdn": "33612345678", "to": "33756781234", "messageId": "t1", "text": "Oui"}
    async with aiohttp.ClientSession() as session, session.post(url, data=single) as response:
        return response.status


@pytest.mark.timeout(240)
async def test_run_without_a_token_makes_one_shows_it_once_and_keeps_it(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("HTTP", "API", "WORKER_WEB", "SINKS_WEB")}
    env = run_env(tmp_path, ports)
    del env[TOKEN_SETTING]
    env["SMS_REPLIES_HTTP_HOST"] = "0.0.0.0"
    path = "/callbacks/smspartner"
    local = f"http://127.0.0.1:{ports['HTTP']}{path}"
    run = start_run(env, tmp_path / "run.log")
    try:
        assert run.stdout is not None
        banner = (await asyncio.to_thread(run.stdout.readline)).decode().strip()
        public = f"http://<this host's public name or address>:{ports['HTTP']}{path}?token="
        assert banner.startswith(f"sms-replies is running. Callback URL: {public}"), banner
        token = banner.removeprefix(f"sms-replies is running. Callback URL: {public}")
        first = [
            await callback_status(f"{local}?token={token}"),
            await callback_status(local),
            await callback_status(f"{local}?token=wrong-{token}"),
        ]
    finally:
        assert stop_run(run) == 0
    kept = tmp_path / "data" / "callback-token"
    assert kept.read_text().strip() == token
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert len(token) >= 32
    assert first == [200, 401, 401]

    run = start_run(env, tmp_path / "run-2.log")  # same data directory
    try:
        assert run.stdout is not None
        again = (await asyncio.to_thread(run.stdout.readline)).decode().strip()
        second = await callback_status(f"{local}?token={token}")
    finally:
        assert stop_run(run) == 0
    assert again == (
        f"sms-replies is running. Callback URL: http://<this host's public name or address>:"
        f"{ports['HTTP']}{path}?token=<the token in {kept}>"
    )
    assert second == 200
    for log_name in ("run.log", "run-2.log"):
        text = (tmp_path / log_name).read_text()
        assert "started ingest" in text
        assert token not in text, log_name
