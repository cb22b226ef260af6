"""Reading the opt-out list (``optouts``) of any store: the list, and one number's status.

The sinks keep one row per sender: its latest decision (``status`` ``opted_out``
or ``opted_in``, ``since`` = ``received_at`` of the reply that decided it, that
``reply_id`` and its ``source``: ``provider``, ``text`` or ``keyword``; see
:mod:`sms_replies.optout`). ClickHouse keeps every decision and the reader
collapses them with ``FINAL``.

- :func:`list_optouts`: the senders opted out (``include_opted_in``: every row),
  optionally decided since a time; most recent first. The CLI's
  ``optouts list --format json`` and ``GET /api/optouts`` print the same object.
- :func:`check_optout`: the decision for one number given in any format. With a
  pseudonymisation key the stored senders are ``h:`` + HMAC-SHA256(key, E.164
  number): the number given is hashed the same way (and looked up in clear too,
  for rows written before the key was set).

Neither answers "nobody opted out" when it cannot tell: a store that does not
exist, holds no ``replies`` table (another store was meant, or no sink has run)
or keeps no ``optouts`` table (replies written before the opt-out list existed)
raises :class:`NoOptOutListError` (its ``reason`` says which); the CLI warns and
exits 1, ``GET /api/optouts`` answers 503. An ``optouts`` table with no row is
an empty list.

The order is the same in every store: most recent decision first, to the
millisecond, then by sender. ClickHouse 18.16 keeps ``since`` in whole seconds,
so its rows are ordered by their ``version`` column, which holds the
milliseconds (:func:`sms_replies.optout.version`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select

from sms_replies.analytics.params import InvalidQueryError
from sms_replies.errors import SmsRepliesError
from sms_replies.phone import DEFAULT_REGION, NotAPhoneNumber, to_e164
from sms_replies.privacy import is_pseudonym, sender_forms
from sms_replies.schema import TABLE
from sms_replies.stores.ddl import CLICKHOUSE_OPTOUT_VERSION
from sms_replies.stores.readers import Reader

OPTOUTS_TABLE: Final = "optouts"
Status = Literal["opted_out", "opted_in"]
Missing = Literal["no_store", "no_replies", "not_kept"]
_COLUMNS: Final = ("sender", "status", "since", "reply_id", "source")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS_SHIFT: Final = 21  # version = since_ms << 21 | ... (sms_replies.optout.version)


class NoOptOutListError(SmsRepliesError):
    """The store cannot tell who opted out: it does not exist, or keeps no opt-out list.

    ``reason``: ``no_store`` (no such DuckDB file), ``no_replies`` (no ``replies``
    table: another store was meant, or nothing was ever written there) or
    ``not_kept`` (replies, but no ``optouts`` table: written before the opt-out
    list existed). Never retriable by waiting alone.
    """

    retriable = False

    def __init__(self, reason: Missing, message: str) -> None:
        super().__init__(message)
        self.reason: Missing = reason


def missing_optout_list(reader: Reader) -> Missing | None:
    """Why ``reader``'s store cannot tell who opted out, or None when it keeps the list."""
    if not reader.exists:
        return "no_store"
    if reader.columns(OPTOUTS_TABLE):
        return None
    return "not_kept" if reader.columns(TABLE) else "no_replies"


_MISSING_MESSAGES: Final[dict[Missing, str]] = {
    "no_store": "the store does not exist",
    "no_replies": "the store holds no replies table",
    "not_kept": "the store keeps no opt-out list yet (its replies were written before the "
    "opt-out list existed): cannot tell who opted out",
}


def require_optout_list(reader: Reader) -> None:
    """Raise :class:`NoOptOutListError` unless the store keeps an ``optouts`` table."""
    reason = missing_optout_list(reader)
    if reason is not None:
        raise NoOptOutListError(reason, _MISSING_MESSAGES[reason])


@dataclass(frozen=True, slots=True)
class OptOut:
    """One sender's latest decision."""

    sender: str
    status: Status
    since: datetime
    reply_id: str
    source: str


@dataclass(frozen=True, slots=True)
class OptOutList:
    """What ``optouts list --format json`` and ``GET /api/optouts`` return."""

    tz: str
    since: datetime | None
    include_opted_in: bool
    count: int
    optouts: list[OptOut]


@dataclass(frozen=True, slots=True)
class OptOutCheck:
    """The status of one number: ``opted_out`` true when its latest decision is an opt-out."""

    phone: str
    looked_up: list[str]
    opted_out: bool
    decision: OptOut | None


def _rank(o: OptOut) -> tuple[datetime, int, str]:
    """The decision order of :mod:`sms_replies.optout`: later, then opt-out, then reply_id."""
    return (o.since, 1 if o.status == "opted_out" else 0, o.reply_id)


def _epoch_ms(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(milliseconds=1)


def list_optouts(
    reader: Reader,
    *,
    tz: str,
    since: datetime | None = None,
    include_opted_in: bool = False,
) -> OptOutList:
    """The opt-out list, most recent decision first (then by sender); times in zone ``tz``.

    Raises :class:`NoOptOutListError` when the store keeps no opt-out list.
    """
    require_optout_list(reader)
    zone = ZoneInfo(tz)
    t = reader.table(OPTOUTS_TABLE)
    versioned = CLICKHOUSE_OPTOUT_VERSION in reader.columns(OPTOUTS_TABLE)
    stmt = select(*(t.c[name] for name in _COLUMNS))
    if versioned:
        stmt = stmt.add_columns(t.c[CLICKHOUSE_OPTOUT_VERSION])
    if not include_opted_in:
        stmt = stmt.where(t.c.status == "opted_out")
    if since is not None:
        stmt = stmt.where(t.c.since >= since)
    keyed: list[tuple[int, OptOut]] = []
    for s, status, when, rid, source, *version in reader.fetch(stmt):
        o = OptOut(str(s), status, when.astimezone(zone), str(rid), str(source))
        ms = int(version[0]) >> _MS_SHIFT if version else _epoch_ms(when)
        keyed.append((ms, o))
    keyed.sort(key=lambda k: (-k[0], k[1].sender))
    items = [o for _, o in keyed]
    return OptOutList(
        tz=tz,
        since=None if since is None else since.astimezone(zone),
        include_opted_in=include_opted_in,
        count=len(items),
        optouts=items,
    )


def lookup_forms(phone: str, key: bytes | None, region: str = DEFAULT_REGION) -> tuple[str, ...]:
    """The stored forms of ``phone`` (any format, or an ``h:`` pseudonym)."""
    text = phone.strip()
    if is_pseudonym(text):
        return (text,)
    try:
        number = to_e164(text, region)
    except NotAPhoneNumber as exc:
        raise InvalidQueryError("phone", f"{phone!r} is {exc}") from None
    return sender_forms(number, key)


def check_optout(reader: Reader, phone: str, *, tz: str, key: bytes | None) -> OptOutCheck:
    """The latest decision for ``phone`` in any of its stored forms.

    Raises :class:`NoOptOutListError` when the store keeps no opt-out list.
    """
    forms = lookup_forms(phone, key)
    require_optout_list(reader)
    t = reader.table(OPTOUTS_TABLE)
    stmt = select(*(t.c[name] for name in _COLUMNS)).where(
        or_(*(t.c.sender == form for form in forms))
    )
    found = [
        OptOut(str(s), status, when, str(rid), str(source))
        for s, status, when, rid, source in reader.fetch(stmt)
    ]
    decision = max(found, key=_rank) if found else None
    if decision is not None:
        zone = ZoneInfo(tz)
        decision = OptOut(
            decision.sender,
            decision.status,
            decision.since.astimezone(zone),
            decision.reply_id,
            decision.source,
        )
    return OptOutCheck(
        phone=forms[0],
        looked_up=list(forms),
        opted_out=decision is not None and decision.status == "opted_out",
        decision=decision,
    )
