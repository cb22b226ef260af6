"""The DuckDB sink's store endpoint: other processes read (and write) through the owner.

DuckDB lets one process hold a file for writing, and a reader in another
process holds a lock that keeps the writer out: readers polling without pause
starved the sink for minutes. So the sink process keeps the one read-write
connection for its whole life and serves everyone else's statements over HTTP
on 127.0.0.1 (an ephemeral port, never another address), each on its own cursor
of that connection: DuckDB's MVCC runs them beside the sink's inserts, and no
reader can hold the writer off.

Discovery: ``<store>.endpoint`` (mode 0600, next to the store) holds the pid of
the owner and, once it serves, its URL and a random bearer token. A file whose
pid is gone is stale. :mod:`sms_replies.analytics.store` is the client.

``POST /lend`` ``{"seconds": N}``: the owner closes the store and keeps off it
for N seconds (its writes wait, as for a lock), for a program that needs the file
itself (a backup, erasure's rewrite of the file); it reopens the store afterwards,
or at once after ``{"seconds": 0}``. Meanwhile ``/ping`` says ``lent`` and
clients open the file themselves, as when no sink runs. :func:`lend` and
:func:`borrowed` are the client of ``/lend``.

Wire format: ``POST /execute`` ``{"sql", "params", "mode": "read"|"write"}``;
a read runs in a READ ONLY transaction rolled back afterwards, a write in
autocommit. The answer is ``{"columns", "rows"}``, or 422 ``{"error": <DuckDB
exception class>, "message"}``. Values that JSON lacks (datetimes, decimals...)
travel tagged: ``{"$": "datetime", "v": "2025-03-01T08:00:00+00:00"}``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hmac
import http.client
import logging
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import duckdb
import orjson
from aiohttp import web

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # loopback only, whatever the other listeners' settings
Mode = Literal["read", "write"]
MAX_LEND_SECONDS = 600.0
READER_THREADS = 4  # statements run at once; more clients wait their turn
T = TypeVar("T")


def endpoint_path(store: Path) -> Path:
    return store.with_name(store.name + ".endpoint")


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    pid: int
    url: str | None  # None: the owner is opening the store and does not serve yet
    token: str | None


def read_endpoint(store: Path) -> EndpointInfo | None:
    """The store's owner as its endpoint file says; None if absent or its process is gone."""
    try:
        fields = orjson.loads(endpoint_path(store).read_bytes())
        info = EndpointInfo(int(fields["pid"]), fields.get("url"), fields.get("token"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None  # a crashed owner's file
    except PermissionError:
        pass  # alive, another user's
    return info


def write_endpoint(store: Path, info: EndpointInfo) -> None:
    """Atomically, readable by this user only (the token is a credential)."""
    target = endpoint_path(store)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps({"pid": info.pid, "url": info.url, "token": info.token}))
    os.replace(temporary, target)


def remove_endpoint(store: Path) -> None:
    """Remove the file if it is this process's."""
    info = read_endpoint(store)
    if info is not None and info.pid == os.getpid():
        endpoint_path(store).unlink(missing_ok=True)


# -- values ---------------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """A DuckDB value or parameter as JSON, non-JSON types tagged."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, dt.datetime):
        return {"$": "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$": "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$": "time", "v": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"$": "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, Decimal):
        return {"$": "decimal", "v": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$": "uuid", "v": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$": "bytes", "v": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {"$": "dict", "v": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    raise TypeError(f"cannot send a {type(value).__name__} to the store endpoint")


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": Decimal,
    "uuid": uuid.UUID,
    "bytes": base64.b64decode,
}


def decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        kind = value["$"]
        if kind == "dict":
            return {decode_value(k): decode_value(v) for k, v in value["v"]}
        return _DECODERS[kind](value["v"])
    return value


def decode_params(params: Any) -> Any:
    if isinstance(params, dict) and "$" not in params:  # named parameters
        return {name: decode_value(v) for name, v in params.items()}
    return decode_value(params)


def encode_params(params: Any) -> Any:
    if isinstance(params, dict):
        return {name: encode_value(v) for name, v in params.items()}
    return encode_value(params)


# -- server ---------------------------------------------------------------------------


def run_statement(
    con: duckdb.DuckDBPyConnection, sql: str, params: Any, mode: Mode
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """One statement on a cursor of its own: readers see committed data, write nothing."""
    cursor = con.cursor()
    try:
        if mode == "read":
            cursor.execute("BEGIN TRANSACTION READ ONLY")
        result = cursor.execute(sql, params)
        columns = [d[0] for d in result.description or []]
        rows = result.fetchall() if result.description else []
        if mode == "read":
            cursor.execute("ROLLBACK")
        return columns, rows
    finally:
        cursor.close()


class StoreEndpoint:
    """Serves a store's statements for the process that owns its connection."""

    def __init__(
        self,
        store: Path,
        connection: Callable[[], duckdb.DuckDBPyConnection | None],
        lend: Callable[[float], None],
        lent: Callable[[], bool],
    ) -> None:
        self.store = store
        self.connection = connection
        self.lend = lend
        self.lent = lent
        self.token = secrets.token_hex(16)
        self._runner: web.AppRunner | None = None
        # Its own threads: however many clients wait, the sink's writes (on the
        # loop's default executor) never queue behind them.
        self._threads: ThreadPoolExecutor | None = None

    def announce_opening(self) -> None:
        """Tell readers the owner is taking the file: they wait instead of opening it."""
        self.store.parent.mkdir(parents=True, exist_ok=True)
        write_endpoint(self.store, EndpointInfo(os.getpid(), None, None))

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._threads = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="store-endpoint")
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/execute", self._execute)
        app.router.add_get("/ping", self._ping)
        app.router.add_post("/lend", self._lend)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        write_endpoint(self.store, EndpointInfo(os.getpid(), f"http://{HOST}:{port}", self.token))
        log.info("store endpoint for %s on %s:%d", self.store, HOST, port)

    async def stop(self) -> None:
        remove_endpoint(self.store)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, func, *args)

    def _authorised(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    async def _ping(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "unauthorised"}, status=401)
        if self.lent():
            return web.json_response({"ok": False, "lent": True})
        con = await self._in_thread(self.connection)
        return web.json_response({"ok": con is not None, "lent": False})

    async def _lend(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "unauthorised"}, status=401)
        try:
            seconds = float(orjson.loads(await request.read())["seconds"])
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": "bad_request", "message": str(exc)}, status=400)
        if not 0 <= seconds <= MAX_LEND_SECONDS:
            return web.json_response(
                {"error": "bad_request", "message": f"seconds: 0 <= s <= {MAX_LEND_SECONDS}"},
                status=400,
            )
        await self._in_thread(self.lend, seconds)
        if seconds:
            log.warning("store %s lent to another process for %.1f s", self.store, seconds)
        else:
            log.info("store %s given back", self.store)
        return web.json_response({"ok": True})

    async def _execute(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "unauthorised"}, status=401)
        con = await self._in_thread(self.connection)
        if con is None:
            return web.json_response({"error": "unavailable", "message": "reopening"}, status=503)
        try:
            body = orjson.loads(await request.read())
            sql = str(body["sql"])
            params = decode_params(body.get("params"))
            mode: Mode = "write" if body.get("mode") == "write" else "read"
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": "bad_request", "message": str(exc)}, status=400)
        try:
            columns, rows = await self._in_thread(run_statement, con, sql, params, mode)
        except duckdb.Error as exc:
            return web.json_response({"error": type(exc).__name__, "message": str(exc)}, status=422)
        try:
            payload = orjson.dumps({"columns": columns, "rows": encode_value(rows)})
        except TypeError as exc:
            return web.json_response({"error": "Error", "message": str(exc)}, status=422)
        return web.Response(body=payload, content_type="application/json")


# -- client: lending ------------------------------------------------------------------


def lend(store: Path, seconds: float, *, timeout: float = 10.0) -> bool:
    """Ask the DuckDB sink that owns ``store`` to close it and keep off it for ``seconds``.

    For a program that needs the file itself (erasure's rewrite, a backup): the
    sink's writes wait meanwhile, as for a lock, and it reopens the store when
    the time is up (``seconds=0``: take it back now). False: no sink owns it.
    Raises OSError when the owner does not answer, ValueError when it refuses.
    """
    info = read_endpoint(store)
    if info is None or info.url is None:
        return False
    url = urlsplit(info.url)
    conn = http.client.HTTPConnection(url.hostname or HOST, url.port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/lend",
            body=orjson.dumps({"seconds": seconds}),
            headers={"Authorization": f"Bearer {info.token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise ValueError(f"the DuckDB sink refused to lend the store: {body!r}")
    return True


@contextmanager
def borrowed(store: Path, seconds: float = 300.0) -> Iterator[bool]:
    """The DuckDB sink keeps off the file inside the block (at most ``seconds``).

    Yields whether a sink lent it (False: none runs); gives it back on exit.
    """
    lent = lend(store, seconds)
    try:
        yield lent
    finally:
        if lent:
            lend(store, 0)
