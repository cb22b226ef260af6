"""Reassembly of long SMS replies from their parts: pure logic, no Faust, no I/O.

The stream layer keeps one :class:`KeyState` per reassembly key
(recipient, sender, concat-ref, concat-total) in a Faust table, calls
:func:`accept` for each part and :func:`expire_due` when the key's
:func:`next_deadline` has passed; the returned :class:`Step` says what to
store under the key and which replies to publish.

Lifecycle of a key::

    parts arrive -> all parts: reply published, key keeps a tombstone
                 -> no new part for ``timeout``: incomplete reply published,
                    key keeps a tombstone marked expired
    tombstone    -> re-delivered parts of the closed message are duplicates;
                    a missing part of an expired message is published alone,
                    ``late``; after ``horizon`` the key is deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from sms_replies.optout import keyword_of, stop_source_of_keyword
from sms_replies.records import RawPart, RecordDecodeError, Reply, provider_time_ms

#: Stands where a part never arrived, in the text of an incomplete reply.
GAP_MARKER: Final = "[…]"


@dataclass(frozen=True, slots=True)
class Closed:
    """The message last published under a key (the tombstone), kept for the horizon.

    It keeps the parts themselves, not only their ids: a part seen again re-emits
    the reply it belongs to. That is what makes a replay after a crash safe: the
    local table may already hold the effect of a record whose reply never left
    the worker (Faust writes RocksDB before the producer flushes), so "already
    seen" must not mean "already published". Sinks drop the repeat by reply_id.
    """

    total: int
    message: tuple[RawPart, ...]  # the parts of the published message
    expired: bool  # published incomplete (timeout or collision)
    at_ms: int  # when it was closed: last part's ingress time, or the expiry tick's time
    late: tuple[RawPart, ...] = ()  # parts that came after it expired, published alone
    closed_by: str | None = None  # provider id of the part whose collision closed it

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(p.provider_message_id for p in (*self.message, *self.late))

    @property
    def part_numbers(self) -> frozenset[int]:
        return frozenset(_number(p) for p in (*self.message, *self.late))

    def reply(self) -> Reply:
        return assemble(self.message, total=self.total)

    def reply_of(self, provider_id: str) -> Reply:
        """The published reply that holds the part ``provider_id``."""
        for part in self.late:
            if part.provider_message_id == provider_id:
                return assemble([part], total=self.total, late=True)
        return self.reply()

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> Closed:
        return cls(
            total=int(fields["total"]),
            message=tuple(RawPart.from_dict(p) for p in fields["message"]),
            expired=bool(fields["expired"]),
            at_ms=int(fields["at_ms"]),
            late=tuple(RawPart.from_dict(p) for p in fields.get("late", ())),
            closed_by=fields.get("closed_by"),
        )


@dataclass(frozen=True, slots=True)
class KeyState:
    """The state of one reassembly key: the message in progress and the last closed one."""

    total: int
    parts: Mapping[int, RawPart] = field(default_factory=dict)
    closed: Closed | None = None

    @property
    def last_received_ms(self) -> int:
        return max(p.received_at_ms for p in self.parts.values())

    def encode(self) -> bytes:
        # orjson writes the dataclasses (Closed, RawPart, Concat) itself, field by
        # field: the shape Closed.from_dict and RawPart.from_dict read back.
        return orjson.dumps(
            {"total": self.total, "parts": tuple(self.parts.values()), "closed": self.closed}
        )

    @classmethod
    def decode(cls, data: bytes) -> KeyState:
        try:
            fields = orjson.loads(data)
            parts = [RawPart.from_dict(raw) for raw in fields["parts"]]
            closed = fields.get("closed")
            return cls(
                total=int(fields["total"]),
                parts={_number(p): p for p in parts},
                closed=None if closed is None else Closed.from_dict(closed),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise RecordDecodeError(f"not a pending message: {exc}") from None


@dataclass(frozen=True, slots=True)
class Step:
    """Outcome for one key: its new state (None: delete it) and replies to publish."""

    pending: KeyState | None
    replies: tuple[Reply, ...] = ()
    duplicate: bool = False


def accept(pending: KeyState | None, part: RawPart) -> Step:
    """Add ``part`` to the message pending under its key.

    * A single message (no concat header) is a reply by itself; the state is untouched.
    * A part seen before (same provider id) changes nothing; if it belongs to a
      reply already published, that reply is emitted again (see :class:`Closed`).
    * A part whose number is already held under another provider id cannot belong
      to the pending message (concat-ref wrapped, or a new message reused it):
      the pending message is published as incomplete and the part starts a new one.
    * A part missing from a message that expired is published alone, ``late``.
    * When every part is there, the reply is published and the key keeps a tombstone.
    """
    concat = part.concat
    if concat is None:
        return Step(pending=pending, replies=(single_reply(part),))
    if pending is None:
        pending = KeyState(total=concat.total)
    closed = pending.closed
    part_id = part.provider_message_id
    held = pending.parts.get(concat.part)
    if closed is not None and part_id in closed.ids:
        return Step(pending=pending, replies=(closed.reply_of(part_id),), duplicate=True)
    if held is not None and held.provider_message_id == part_id:
        again = (closed.reply(),) if closed is not None and closed.closed_by == part_id else ()
        return Step(pending=pending, replies=again, duplicate=True)
    is_late = (
        not pending.parts
        and closed is not None
        and closed.expired
        and concat.part not in closed.part_numbers
    )
    if is_late and closed is not None:
        with_late = dataclasses.replace(closed, late=(*closed.late, part))
        reply = assemble([part], total=concat.total, late=True)
        return Step(pending=KeyState(total=concat.total, closed=with_late), replies=(reply,))
    flushed: tuple[Reply, ...] = ()
    parts: dict[int, RawPart] = {}
    if held is not None:
        closed = Closed(
            total=pending.total,
            message=_ordered(pending.parts),
            expired=True,
            at_ms=pending.last_received_ms,
            closed_by=part_id,
        )
        flushed = (closed.reply(),)
    else:
        parts = dict(pending.parts)
    parts[concat.part] = part
    if len(parts) == concat.total:
        done = Closed(
            total=concat.total,
            message=_ordered(parts),
            expired=False,
            at_ms=max(p.received_at_ms for p in parts.values()),
        )
        done_state = KeyState(total=concat.total, closed=done)
        return Step(pending=done_state, replies=(*flushed, done.reply()))
    in_progress = KeyState(total=concat.total, parts=parts, closed=closed)
    return Step(pending=in_progress, replies=flushed)


def next_deadline(pending: KeyState, *, timeout_ms: int, horizon_ms: int) -> int:
    """Epoch ms at which :func:`expire_due` has something to do for this key."""
    if pending.parts:
        return pending.last_received_ms + timeout_ms
    closed_at = pending.closed.at_ms if pending.closed is not None else 0
    return closed_at + horizon_ms


def expire_due(pending: KeyState, now_ms: int, *, timeout_ms: int, horizon_ms: int) -> Step:
    """Publish a message whose parts stopped coming; forget a tombstone past the horizon.

    ``timeout_ms`` is sliding: every new part pushes the deadline back.
    ``horizon_ms`` is how long duplicates of a closed message are recognised.
    """
    closed = pending.closed
    if (
        not pending.parts
        and closed is not None
        and closed.expired
        and closed.closed_by is None
        and closed.at_ms == now_ms
    ):
        # The very tick that expired it, replayed after a crash: emit again.
        return Step(pending=pending, replies=(closed.reply(),))
    if now_ms < next_deadline(pending, timeout_ms=timeout_ms, horizon_ms=horizon_ms):
        return Step(pending=pending)
    if not pending.parts:
        return Step(pending=None)
    closed = Closed(
        total=pending.total, message=_ordered(pending.parts), expired=True, at_ms=now_ms
    )
    return Step(pending=KeyState(total=pending.total, closed=closed), replies=(closed.reply(),))


def recovery_deadline(pending: KeyState, *, timeout_ms: int, horizon_ms: int) -> int:
    """Like :func:`next_deadline`, for an index rebuilt after a restart.

    A message expired by a tick is due again at that tick's time, so that the
    tick, if it is replayed, re-emits the reply it produced.
    """
    closed = pending.closed
    if not pending.parts and closed is not None and closed.expired and closed.closed_by is None:
        return closed.at_ms
    return next_deadline(pending, timeout_ms=timeout_ms, horizon_ms=horizon_ms)


def expire(pending: KeyState) -> Reply:
    """The reply of a message whose missing parts never came (complete=False)."""
    return assemble(pending.parts.values(), total=pending.total)


def _number(part: RawPart) -> int:
    return part.concat.part if part.concat is not None else 1


def _ordered(parts: Mapping[int, RawPart]) -> tuple[RawPart, ...]:
    return tuple(parts[n] for n in sorted(parts))


def assemble(parts: Iterable[RawPart], total: int, *, late: bool = False) -> Reply:
    """Join parts by part number; a missing part shows as GAP_MARKER."""
    by_number = {_number(p): p for p in parts}
    ordered = [by_number[n] for n in sorted(by_number)]
    first = ordered[0]
    complete = len(by_number) == total
    if complete:
        text = "".join(p.text for p in ordered)
    else:
        text = "".join(
            by_number[n].text if n in by_number else GAP_MARKER for n in range(1, total + 1)
        )
    message_type = "stop" if any(p.message_type == "stop" for p in ordered) else first.message_type
    ids = tuple(p.provider_message_id for p in ordered)
    # Every part came to the same per-campaign URL: the first part that carried
    # campaign or tag gives both.
    attributed = next((p for p in ordered if p.campaign or p.tag), first)
    keyword = keyword_of(text)
    source = stop_source_of_keyword(keyword, message_type)
    return Reply(
        reply_id=reply_id(first, ids),
        channel=first.channel,
        sender=first.sender,
        recipient=first.recipient,
        text=text,
        keyword=keyword,
        is_stop=source is not None,
        stop_source=source,
        parts_expected=total,
        parts_received=len(by_number),
        complete=complete,
        received_at_ms=min(p.received_at_ms for p in ordered),
        provider_message_ids=ids,
        last_part_at_ms=max(p.received_at_ms for p in ordered),
        late=late,
        provider_sent_at_ms=provider_sent_at_ms(ordered),
        campaign=attributed.campaign,
        tag=attributed.tag,
    )


def single_reply(part: RawPart) -> Reply:
    """``assemble([part], total=1)``, in fewer steps: a single message is most replies."""
    text = part.text
    keyword = keyword_of(text)
    source = stop_source_of_keyword(keyword, part.message_type)
    ids = (part.provider_message_id,)
    received = part.received_at_ms
    sent = part.provider_timestamp
    return Reply(
        reply_id=reply_id(part, ids),
        channel=part.channel,
        sender=part.sender,
        recipient=part.recipient,
        text=text,
        keyword=keyword,
        is_stop=source is not None,
        stop_source=source,
        parts_expected=1,
        parts_received=1,
        complete=True,
        received_at_ms=received,
        provider_message_ids=ids,
        last_part_at_ms=received,
        late=False,
        provider_sent_at_ms=None if sent is None else _time_or_none(sent),
        campaign=part.campaign,
        tag=part.tag,
    )


def provider_sent_at_ms(parts: Iterable[RawPart]) -> int | None:
    """The earliest ``message-timestamp`` of the parts held (epoch ms, UTC); None: none sent.

    The earliest, not part 1's: part 1 may be the one missing, and the earliest
    is the same whatever order the parts came in. The provider keeps a part's
    timestamp when it retries, so a retried part changes nothing. A timestamp
    that does not parse (only in a record written before the ingress checked it)
    is ignored rather than stopping the reply.
    """
    times = []
    for part in parts:
        if part.provider_timestamp is not None:
            try:
                times.append(provider_time_ms(part.provider_timestamp))
            except ValueError:
                continue
    return min(times, default=None)


def _time_or_none(provider_timestamp: str) -> int | None:
    try:
        return provider_time_ms(provider_timestamp)
    except ValueError:  # as provider_sent_at_ms: ignored
        return None


def reply_id(first: RawPart, provider_ids: tuple[str, ...]) -> str:
    """Deterministic id: the same callbacks always give the same id, whatever the encoding.

    Long number: the provider's message ids of the parts. Short number: its
    ``message_id`` names the campaign message replied to, not the reply, so the
    sender, type and text are part of the identity.

    With a pseudonymisation key the sender here is already its keyed pseudonym
    (the ingress replaces the number), so the id is keyed too: it cannot be
    recomputed from a guessed number without the key.
    """
    if first.channel == "short_number":
        identity = ("short_number", first.sender, *provider_ids, first.message_type, first.text)
    else:
        identity = ("long_number", first.sender, first.recipient or "", *provider_ids)
    return hashlib.blake2b("\x1f".join(identity).encode(), digest_size=16).hexdigest()


#: Old name (it is more than a pending message), kept for code written before.
PendingMessage = KeyState
