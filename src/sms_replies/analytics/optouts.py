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

A store without an ``optouts`` table (no sink has run yet) has an empty list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select

from sms_replies.analytics.params import InvalidQueryError
from sms_replies.phone import DEFAULT_REGION, NotAPhoneNumber, to_e164
from sms_replies.privacy import is_pseudonym, sender_forms
from sms_replies.stores.readers import Reader

OPTOUTS_TABLE: Final = "optouts"
Status = Literal["opted_out", "opted_in"]
_COLUMNS: Final = ("sender", "status", "since", "reply_id", "source")


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


def list_optouts(
    reader: Reader,
    *,
    tz: str,
    since: datetime | None = None,
    include_opted_in: bool = False,
) -> OptOutList:
    """The opt-out list, most recent decision first (then by sender); times in zone ``tz``."""
    zone = ZoneInfo(tz)
    items: list[OptOut] = []
    if reader.columns(OPTOUTS_TABLE):
        t = reader.table(OPTOUTS_TABLE)
        stmt = select(*(t.c[name] for name in _COLUMNS))
        if not include_opted_in:
            stmt = stmt.where(t.c.status == "opted_out")
        if since is not None:
            stmt = stmt.where(t.c.since >= since)
        items = [
            OptOut(str(s), status, when.astimezone(zone), str(rid), str(source))
            for s, status, when, rid, source in reader.fetch(stmt)
        ]
    items.sort(key=lambda o: (-o.since.timestamp(), o.sender))
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
    """The latest decision for ``phone`` in any of its stored forms."""
    forms = lookup_forms(phone, key)
    found: list[OptOut] = []
    if reader.columns(OPTOUTS_TABLE):
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
