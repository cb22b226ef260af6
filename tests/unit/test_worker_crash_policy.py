"""The worker's crash policy: a record the producer gave up on ends the process at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sms_replies.streams.crash import EXIT_CODE

_SCRIPT = textwrap.dedent(
    """
    import asyncio
    from sms_replies.streams.crash import exit_on_send_failure

    async def main(fail: bool) -> None:
        future = asyncio.get_running_loop().create_future()
        if fail:
            future.set_exception(ConnectionError("broker gone"))
        else:
            future.set_result(None)
        exit_on_send_failure(future)
        print("still running")

    asyncio.run(main({fail}))
    """
)


def run(fail: bool) -> subprocess.CompletedProcess[str]:
    code = _SCRIPT.replace("{fail}", str(fail))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )


def test_a_failed_delivery_exits_before_anything_else_runs() -> None:
    result = run(fail=True)
    assert result.returncode == EXIT_CODE
    assert "still running" not in result.stdout
    assert "record not published" in result.stderr
    assert "exiting before any commit" in result.stderr


def test_a_delivered_record_changes_nothing() -> None:
    result = run(fail=False)
    assert result.returncode == 0
    assert result.stdout.strip() == "still running"
