"""The worker's crash policy: exit before any commit when a batch cannot be completed.

A batch whose handling failed (the store or the producer), or a reply or
changelog record the producer gave up on, must never be followed by a commit of
the offsets that produced it. The worker then exits at once (no cleanup that
could commit); its supervisor restarts it and the uncommitted batch is read
again, which the reassembly makes idempotent (streams.reassembly).
"""

from __future__ import annotations

import logging
import os
from typing import Any, NoReturn

log = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE: the supervisor restarts the worker


def exit_before_commit(reason: str, *, exc_info: bool = False) -> NoReturn:
    """Log ``reason`` and exit the process now, before Faust can commit anything."""
    log.critical("%s: exiting before any commit", reason, exc_info=exc_info)
    logging.shutdown()
    os._exit(EXIT_CODE)


def exit_on_send_failure(future: Any) -> None:
    """Done-callback of a record's delivery: a record the producer gave up on exits.

    aiokafka resolves a record's future before it wakes up ``flush()``, so this
    runs before Faust's pre-commit flush returns: exiting here leaves the offset
    uncommitted, and the restarted worker replays the part and re-emits the
    reply (see streams.reassembly.Closed).
    """
    if not future.cancelled() and future.exception() is not None:
        exit_before_commit(f"record not published ({future.exception()!r})")
