"""Opening a DuckDB store: through the DuckDB sink's loopback endpoint while a sink
owns the file (:class:`RemoteConnection`), else the file itself, waiting out a lock;
and lending the file out of the sink's hands.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import duckdb
import orjson

from sms_replies.stores.duckdb_endpoint import (
    EndpointInfo,
    Mode,
    decode_value,
    encode_params,
    read_endpoint,
)
from sms_replies.stores.errors import StoreBusyError, StoreError
from sms_replies.stores.readers._base import QUERY_TIMEOUT, log


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    message = str(exc)
    # Another process holds the file's lock (IOException), or this process has
    # it open with another configuration (read-only vs read-write: ConnectionException).
    return "lock" in message.lower() or "different configuration" in message


class RemoteResult:
    """The rows of one statement run by the store's owner (the subset of DuckDB's API used)."""

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        self.description = [(name, None, None, None, None, None, None) for name in columns]
        self._rows = rows
        self._next = 0

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._next = self._rows[self._next :], len(self._rows)
        return rows


class RemoteConnection:
    """Runs each ``execute`` through the DuckDB sink's endpoint (see the package docstring).

    Duck-typed as a DuckDB connection for the analytics code: ``execute(sql,
    params)`` returning ``fetchone``/``fetchall``/``description``, and ``close``.
    A read-only one runs every statement in a READ ONLY transaction; a writer's
    statements each commit on their own. DuckDB errors come back as the same
    ``duckdb`` exception classes.
    """

    def __init__(self, endpoint: EndpointInfo, mode: Mode, timeout: float = QUERY_TIMEOUT):
        url = urlsplit(endpoint.url or "")
        self.mode = mode
        self._headers = {
            "Authorization": f"Bearer {endpoint.token}",
            "Content-Type": "application/json",
        }
        self._http = http.client.HTTPConnection(
            url.hostname or "127.0.0.1", url.port, timeout=timeout
        )

    def ping(self) -> bool | None:
        """Whether the owner holds the store open; None: nothing answers, or it lent the store."""
        try:
            status, body = self._request("GET", "/ping", None)
        except OSError:
            return None
        answer = orjson.loads(body) if status == 200 else {}
        if answer.get("lent"):
            return None  # the borrower, or anyone after it, opens the file itself
        return bool(answer.get("ok"))

    def execute(self, sql: str, params: Any = None) -> RemoteResult:
        payload = orjson.dumps({"sql": sql, "params": encode_params(params), "mode": self.mode})
        try:
            status, body = self._request("POST", "/execute", payload)
        except OSError as exc:
            raise StoreBusyError(f"the DuckDB sink stopped answering: {exc}") from None
        answer = orjson.loads(body)
        if status == 200:
            rows = [tuple(decode_value(row)) for row in answer["rows"]]
            return RemoteResult(answer["columns"], rows)
        if status == 422:
            error = getattr(duckdb, str(answer.get("error")), duckdb.Error)
            if not (isinstance(error, type) and issubclass(error, duckdb.Error)):
                error = duckdb.Error
            raise error(answer.get("message", "error"))
        if status == 503:
            raise StoreBusyError("the DuckDB sink is reopening the store; try again")
        raise StoreError(f"the DuckDB sink's endpoint answered {status}: {answer}")

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        self._http.request(method, path, body=body, headers=self._headers)
        response = self._http.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self._http.close()


def _remote(path: Path, *, read_only: bool) -> RemoteConnection | bool | None:
    """A connection through the store's owner; None: no owner; True: the owner is opening."""
    endpoint = read_endpoint(path)
    if endpoint is None:
        return None
    if endpoint.url is None:
        return True
    remote = RemoteConnection(endpoint, "read" if read_only else "write")
    answer = remote.ping()
    if answer:
        return remote
    remote.close()
    # Reopening: wait, as for a lock. Lent or not serving: try the file (a lock
    # conflict then waits as well).
    return True if answer is False else None


def connect_duckdb(path: Path, *, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
    """Through the sink's endpoint while a sink owns the store, else the file itself.

    The returned object is a real DuckDB connection or a :class:`RemoteConnection`
    (typed as the former: the analytics code uses only what both provide).
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        remote = _remote(path, read_only=read_only)
        if isinstance(remote, RemoteConnection):
            return cast(duckdb.DuckDBPyConnection, remote)
        try:
            if remote is None:  # nobody owns the store: open it (the owner waits if starting)
                return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if not _is_lock_conflict(exc):
                raise StoreError(f"cannot open the store {path}: {exc}") from None
        if time.monotonic() + delay > deadline:
            raise StoreBusyError(
                f"the store {path} stayed locked by another process for {timeout:g} s; try again"
            ) from None
        log.debug("store %s locked or being opened, retrying in %.3f s", path, delay)
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@contextmanager
def borrowed_store(path: Path, seconds: float = 300.0) -> Iterator[bool]:
    """The DuckDB sink keeps off the file inside the block (at most ``seconds``).

    For work on the file itself (erasure's rewrite, a backup): open it with
    :func:`open_writer` / :func:`open_reader` inside; they then open the file,
    not the sink's endpoint. Yields whether a sink lent it (False: none runs).
    """
    lent = lend_store(path, seconds)
    try:
        yield lent
    finally:
        if lent:
            lend_store(path, 0)


def lend_store(path: Path, seconds: float, *, timeout: float = 10.0) -> bool:
    """Ask the DuckDB sink that owns ``path`` to close it and keep off it for ``seconds``.

    For a program that needs the file itself (a backup, a maintenance tool):
    call this, then open the file; the sink's writes wait meanwhile, as for a
    lock, and it reopens the store when the time is up (``seconds=0``: take it
    back now). False: no sink owns it.
    """
    endpoint = read_endpoint(path)
    if endpoint is None or endpoint.url is None:
        return False
    remote = RemoteConnection(endpoint, "write", timeout=timeout)
    try:
        status, body = remote._request("POST", "/lend", orjson.dumps({"seconds": seconds}))
    except OSError as exc:
        raise StoreBusyError(f"the DuckDB sink did not answer: {exc}") from None
    finally:
        remote.close()
    if status != 200:
        raise StoreError(f"the DuckDB sink refused to lend the store: {body!r}")
    return True
