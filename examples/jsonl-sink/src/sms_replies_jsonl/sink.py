"""JSON Lines sink: one reply per line, appended to one file.

**Idempotent by reply_id: the file is the index.** ``setup`` reads the
reply_id of every line already in the file into a set; ``write`` appends only
the replies whose id is not in it, so a replayed batch appends nothing and the
first stored version wins. There is no second file that could disagree.

**One writer.** The sink holds an exclusive ``flock`` on the file from
``setup`` to ``close``; a second writer gets a retriable error (the runner
retries until the first one is gone) instead of interleaving lines.

**Whole lines only.** Each batch is appended with one write, then flushed and
fsynced before ``write`` returns (the runner commits offsets after that). A
write that fails is cut back to the previous size; a line left unfinished by a
crash is cut off by the next ``setup``. The batch is then replayed whole.

Settings: ``SMS_REPLIES_JSONL_PATH`` (default ``<data_dir>/replies.jsonl``).
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sms_replies.sinks import (
    COLUMN_NAMES,
    Reply,
    Sink,
    SinkContext,
    SinkWriteError,
    to_row,
    unique_by_id,
)

log = logging.getLogger(__name__)


class JsonlSinkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMS_REPLIES_JSONL_", extra="ignore")

    path: Path | None = Field(None, description="The file (default <data_dir>/replies.jsonl).")


def encode(reply: Reply, ingested_at: datetime) -> bytes:
    """One line; timestamps as RFC 3339 strings in UTC."""
    return orjson.dumps(dict(zip(COLUMN_NAMES, to_row(reply, ingested_at), strict=True))) + b"\n"


class JsonlSink(Sink):
    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: io.FileIO | None = None
        self._stored: set[str] = set()

    @classmethod
    def from_settings(cls, settings: SinkContext) -> Self:
        return cls(JsonlSinkSettings().path or settings.data_dir / "replies.jsonl")

    async def setup(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> io.FileIO:
        if self._file is not None:
            return self._file
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: a failed append must leave no bytes behind in a buffer.
            file = self.path.open("a+b", buffering=0)
        except OSError as exc:
            raise SinkWriteError(f"cannot open {self.path}: {exc}", retriable=True) from None
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            file.close()
            raise SinkWriteError(
                f"{self.path} is held by another writer: {exc}", retriable=True
            ) from None
        try:
            self._stored = self._load(file)
        except BaseException:
            file.close()  # also releases the lock
            raise
        self._file = file
        log.info("jsonl sink ready at %s (%d replies stored)", self.path, len(self._stored))
        return file

    def _load(self, file: io.FileIO) -> set[str]:
        file.seek(0)
        data = file.readall()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            log.warning("jsonl sink: cutting off an unfinished last line of %s", self.path)
            file.truncate(complete)
        stored: set[str] = set()
        for number, line in enumerate(data[:complete].splitlines(), start=1):
            try:
                stored.add(orjson.loads(line)["reply_id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                # Never skip silently: the ids are the idempotence. Someone must look.
                raise SinkWriteError(
                    f"{self.path}:{number} is not a reply line", retriable=True
                ) from None
        return stored

    async def write(self, batch: Sequence[Reply]) -> None:
        await asyncio.to_thread(self._write, batch)

    def _write(self, batch: Sequence[Reply]) -> None:
        file = self._open()
        new = [reply for reply in unique_by_id(batch) if reply.reply_id not in self._stored]
        if not new:
            return
        ingested_at = datetime.now(UTC)
        try:
            lines = b"".join(encode(reply, ingested_at) for reply in new)
        except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
            raise SinkWriteError(f"cannot encode the batch: {exc}", retriable=False) from None
        size = file.seek(0, os.SEEK_END)
        try:
            view = memoryview(lines)
            while view:  # a raw write may be partial
                view = view[file.write(view) or 0 :]
            os.fsync(file.fileno())
        except OSError as exc:
            self._cut_back(file, size)
            raise SinkWriteError(f"cannot append to {self.path}: {exc}", retriable=True) from None
        self._stored.update(reply.reply_id for reply in new)

    def _cut_back(self, file: io.FileIO, size: int) -> None:
        try:
            file.truncate(size)
        except OSError as exc:  # the next setup cuts the unfinished line instead
            log.warning("jsonl sink: cannot cut %s back to %d bytes: %s", self.path, size, exc)

    async def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(file.close)  # also releases the flock
