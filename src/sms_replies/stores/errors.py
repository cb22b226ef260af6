"""What the stores layer raises: driver errors are converted into these at its boundary.

- :class:`StoreError`: the store cannot be opened, read or written. ``retriable``
  is per instance (``StoreError(message, retriable=True)`` for an outage).
- :class:`StoreBusyError`: the store stayed locked (DuckDB's one writer) or is
  being reopened; retriable.
- :class:`StoreUnavailableError`: the server cannot be reached, timed out, or
  failed mid-statement; retriable.
- :class:`StoreDataError`: the store rejects the data itself (a constraint, a
  value its column cannot hold); retrying the same rows cannot help.

``sms_replies.analytics.store`` re-exports the first two (their old home).
"""

from __future__ import annotations

from sms_replies.errors import SmsRepliesError


class StoreError(SmsRepliesError):
    """A store cannot be opened, read or written (not a database file, I/O error...)."""

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class StoreBusyError(StoreError):
    """Another process held the store's write lock for longer than the caller waits."""

    retriable = True


class StoreUnavailableError(StoreError):
    """The store's server cannot be reached, timed out or dropped the connection."""

    retriable = True


class StoreDataError(StoreError):
    """The store rejects the data itself: writing the same rows again cannot succeed."""

    retriable = False
