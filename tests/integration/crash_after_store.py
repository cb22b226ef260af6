"""``python -m tests.integration.crash_after_store worker``: a worker that dies between
its two writes of a state: after the local store, before the changelog record.

The first changelog send of the process exits it at once (no cleanup, as a crash
would). Test-only: production code has no fault point.
"""

from __future__ import annotations

import os
from typing import Any

from sms_replies.cli import main
from sms_replies.streams import batch

#: The exit status that says the crash happened where it should.
CRASHED = 71

_table_batch_init = batch.TableBatch.__init__


def _dying_table_batch_init(self: batch.TableBatch, table: Any, send: Any) -> None:
    async def crash(partition: int, key: bytes, value: bytes | None) -> Any:
        os._exit(CRASHED)  # the store already holds ``value``

    _table_batch_init(self, table, crash)


if __name__ == "__main__":
    batch.TableBatch.__init__ = _dying_table_batch_init  # type: ignore[method-assign]
    main()
