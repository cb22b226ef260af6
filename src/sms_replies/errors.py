"""One exception root for the whole package.

Driver errors (aiokafka, duckdb, asyncpg...) are converted into these at the
boundary of the module that talks to the driver, so callers only ever catch
``SmsRepliesError`` subclasses. ``retriable`` tells the caller whether trying
again later can succeed (a broker or store outage) or never will (bad data).

The whole tree (classes defined next to the code that raises them say where)::

    SmsRepliesError
    ├── ConfigError                 settings inconsistent, dependency missing
    ├── StartFailed                 a pipeline process kept dying before ready
    ├── InvalidCallback             a callback that can never be accepted (4xx)
    ├── BrokerUnavailable           retriable: the broker did not acknowledge
    ├── StateRecoveryError          retriable: worker state could not be re-seeded
    ├── SinkWriteError              a sink could not write (retriable per instance)
    ├── RecordDecodeError           records.py; also ValueError: a bad topic record
    ├── NotReplayable               dead_letters.py; also ValueError
    ├── SignatureError              ingest/signature.py: missing, wrong or stale signature
    ├── FormDecodeError             ingest/form.py; also ValueError: undecodable charset
    ├── NotAPhoneNumber             phone.py; also ValueError: no (possible) number
    ├── _Rejected                   ingest/app.py: a refused callback (status, reason)
    ├── InvalidQueryError           analytics/params.py; also ValueError
    ├── UnknownCampaignError        analytics/params.py; also LookupError
    ├── CampaignExistsError         analytics/campaigns.py
    ├── NoOptOutListError           analytics/optouts.py: no store, or no opt-out list in it
    ├── StoreError                  stores/errors.py: a store cannot be opened, read, written
    │   ├── StoreBusyError          the store stayed locked (retriable)
    │   ├── StoreUnavailableError   the server is unreachable or failed (retriable)
    │   ├── StoreDataError          the store rejects the data itself
    │   └── PrivacyStoreError       stores/selection.py: erase/retention failed
    └── ApiError                    analytics/api/_http.py: an API answer (status, error)
        └── _InvalidParametersError

A test (tests/unit/test_errors.py) checks that every exception class the
package defines descends from ``SmsRepliesError``.
"""

from __future__ import annotations

from collections.abc import Mapping


class SmsRepliesError(Exception):
    """Root of every error raised by sms-replies."""

    retriable: bool = False


class ConfigError(SmsRepliesError):
    """The settings are inconsistent or a required dependency is missing."""


class StartFailed(SmsRepliesError):
    """A process of the pipeline kept dying before the pipeline was ready."""


class InvalidCallback(SmsRepliesError):
    """A callback that can never be accepted; ``problems`` maps field -> reason."""

    def __init__(self, problems: Mapping[str, str], status: int = 400) -> None:
        self.problems = dict(problems)
        self.status = status
        summary = "; ".join(f"{field}: {reason}" for field, reason in self.problems.items())
        super().__init__(summary or "invalid callback")


class BrokerUnavailable(SmsRepliesError):
    """The broker did not acknowledge a write in time; the caller should retry."""

    retriable = True


class StateRecoveryError(SmsRepliesError):
    """The worker's local state could not be re-seeded into a fresh broker (it is kept)."""

    retriable = True


class SinkWriteError(SmsRepliesError):
    """A sink could not write a batch.

    ``retriable=True`` for outages (the runner retries with backoff, offsets stay
    uncommitted); ``retriable=False`` for records the store will never accept
    (the runner isolates them and sends them to the dead-letter topic).
    """

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable
