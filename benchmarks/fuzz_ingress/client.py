"""Sending a Case over a raw socket and classifying the answer (an Outcome)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from benchmarks.fuzz_ingress.cases import MAX_ANSWER, READ_TIMEOUT, Case, cases

# -- the client ------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    kind: str
    status: str  # "200", "400"... or "closed" | "reset" | "timeout"
    json: bool = False
    leak: bool = False
    seconds: float = 0.0


async def send(port: int, case: Case) -> Outcome:
    started = time.perf_counter()
    outcome = await _send(port, case)
    outcome.seconds = time.perf_counter() - started
    return outcome


async def _send(port: int, case: Case) -> Outcome:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return Outcome(case.kind, "connect-failed")
    try:
        async with asyncio.timeout(READ_TIMEOUT + (5 if case.mode == "slow" else 0)):
            if case.mode == "slow":
                for start in range(0, len(case.data), 64):
                    writer.write(case.data[start : start + 64])
                    await writer.drain()
                    await asyncio.sleep(0.05)
            else:
                writer.write(case.data)
                await writer.drain()
            if case.mode == "truncated":
                writer.write_eof()
            answer = b""
            while len(answer) < MAX_ANSWER:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                answer += chunk
                if _complete(answer, head_only=case.data.startswith(b"HEAD ")):
                    break  # whether or not the server keeps the connection open
    except TimeoutError:
        return Outcome(case.kind, "timeout")
    except (ConnectionResetError, BrokenPipeError):
        return Outcome(case.kind, "reset")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return _outcome(case.kind, answer)


def _final(answer: bytes) -> bytes:
    """The answer without interim 1xx responses (100 Continue)."""
    while answer.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in answer:
        answer = answer.partition(b"\r\n\r\n")[2]
    return answer


def _complete(answer: bytes, *, head_only: bool) -> bool:
    head, found, body = _final(answer).partition(b"\r\n\r\n")
    if not found:
        return False
    if head_only:
        return True
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def _outcome(kind: str, answer: bytes) -> Outcome:
    answer = _final(answer)
    if not answer:
        return Outcome(kind, "closed")
    first, _, rest = answer.partition(b"\r\n")
    parts = first.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return Outcome(kind, "not-http")
    head, _, body = rest.partition(b"\r\n\r\n")
    is_json = b"content-type: application/json" in head.lower()
    leak = b"Traceback" in body or b'File "' in body
    return Outcome(kind, parts[1].decode(), is_json, leak)


async def fire(port: int, requests: int, seed: int, concurrency: int) -> list[Outcome]:
    outcomes: list[Outcome] = []
    source = cases(requests, seed)

    async def worker() -> None:
        for case in source:  # a shared iterator: each worker takes the next case
            outcomes.append(await send(port, case))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes
