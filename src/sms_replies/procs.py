"""Child processes that stop with their parent and ignore the terminal's Ctrl-C."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Linux only: SIGTERM the child if the supervisor dies (even by SIGKILL),
    # so that no broker or worker outlives it.
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a child in its own process group (Ctrl-C reaches only the parent)."""
    return subprocess.Popen(list(args), process_group=0, preexec_fn=_die_with_parent, **kwargs)


def terminate(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; True if it had to be killed. Idempotent."""
    if process.poll() is not None:
        return False
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True
    return False
