"""A throwaway ClickHouse server for tests and benchmarks (not part of the sink kit)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from sms_replies.broker.embedded import free_port

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LocalServer:
    host: str
    port: int
    path: Path


CLICKHOUSE_CONFIG = Path("/etc/clickhouse-server/config.xml")


def clickhouse_server_binary() -> str | None:
    return shutil.which("clickhouse-server")


@contextlib.contextmanager
def local_clickhouse_server(path: Path, *, timeout: float = 30.0) -> Iterator[LocalServer]:
    """Start ``clickhouse-server`` (the Debian package) with its data under ``path``.

    Every path the stock config points at is moved under ``path`` and the logs
    too, so that concurrent runs never share state. Stopped on exit.
    """
    binary = clickhouse_server_binary()
    if binary is None:
        raise FileNotFoundError("clickhouse-server is not installed")
    path.mkdir(parents=True, exist_ok=True)
    process, port = _start(binary, path, timeout)
    try:
        log.info("clickhouse-server pid %d on 127.0.0.1:%d (%s)", process.pid, port, path)
        yield LocalServer("127.0.0.1", port, path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


#: Starts on fresh ports after a port taken meanwhile (free_port's ports are in
#: the range outgoing connections use too: another test's client can take one).
PORT_ATTEMPTS = 3


def _start(binary: str, path: Path, timeout: float) -> tuple[subprocess.Popen[bytes], int]:
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port, http_port, interserver_port = free_port(), free_port(), free_port()
        command = [
            binary,
            f"--config-file={CLICKHOUSE_CONFIG}",
            "--",
            f"--path={path}/",
            f"--tmp_path={path}/tmp/",
            f"--user_files_path={path}/user_files/",
            f"--format_schema_path={path}/format_schemas/",
            f"--logger.log={path}/server.log",
            f"--logger.errorlog={path}/server.err.log",
            "--logger.console=0",
            f"--tcp_port={port}",
            f"--http_port={http_port}",
            f"--interserver_http_port={interserver_port}",
            "--listen_host=127.0.0.1",
        ]
        with (path / "stdout.log").open("wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(port, process, timeout)
        except RuntimeError:
            errors = path / "server.err.log"
            taken = errors.exists() and "Address already in use" in errors.read_text(
                errors="replace"
            )
            if not taken or attempt == PORT_ATTEMPTS:
                raise
            log.warning("clickhouse-server: a port was taken meanwhile; new ports (%d)", attempt)
            errors.unlink()
            continue
        return process, port
    raise AssertionError("unreachable")


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"clickhouse-server exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise TimeoutError(f"clickhouse-server did not listen on {port} within {timeout}s")
