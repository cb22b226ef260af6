"""Reassembly of long SMS replies from their parts: pure logic, no Faust, no I/O.

The stream layer keeps one :class:`PendingMessage` per reassembly key
(recipient, sender, concat-ref, concat-total) in a Faust table and calls
:func:`accept` for each part; the returned :class:`Step` says what to store
under the key and which replies to publish.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson

from sms_replies.contract import RawPart, RecordDecodeError, Reply
from sms_replies.optout import keyword_of, stop_source

#: Stands where a part never arrived, in the text of an incomplete reply.
GAP_MARKER: Final = "[…]"


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """The state of one reassembly key.

    ``parts``: what was received so far of the message in progress, by part
    number. ``completed``: provider ids of the message last published under this
    key, so that a re-delivered part of it is recognised as a duplicate instead
    of starting a phantom message (the provider delivers at least once).
    """

    total: int
    parts: Mapping[int, RawPart] = field(default_factory=dict)
    completed: frozenset[str] = frozenset()

    @property
    def last_received_ms(self) -> int:
        return max(p.received_at_ms for p in self.parts.values())

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "total": self.total,
                "parts": [p.as_dict() for p in self.parts.values()],
                "completed": sorted(self.completed),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> PendingMessage:
        try:
            fields = orjson.loads(data)
            parts = [RawPart.from_dict(raw) for raw in fields["parts"]]
            return cls(
                total=int(fields["total"]),
                parts={p.concat.part: p for p in parts if p.concat is not None},
                completed=frozenset(fields.get("completed", ())),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise RecordDecodeError(f"not a pending message: {exc}") from None


@dataclass(frozen=True, slots=True)
class Step:
    """Outcome of one part: the key's new state (None: delete it) and replies to publish."""

    pending: PendingMessage | None
    replies: tuple[Reply, ...] = ()
    duplicate: bool = False


def accept(pending: PendingMessage | None, part: RawPart) -> Step:
    """Add ``part`` to the message pending under its key.

    * A single message (no concat header) is a reply by itself; the state is untouched.
    * A part already held, or part of the message last completed under this key,
      with the same provider id, is a duplicate: ignored.
    * A part whose number is already held under another provider id cannot belong
      to the pending message (concat-ref wrapped, or a new message reused it):
      the pending message is published as incomplete and the part starts a new one.
    * When every part is there, the reply is published and the key keeps only
      the completed ids (see :class:`PendingMessage`).
    """
    concat = part.concat
    if concat is None:
        return Step(pending=pending, replies=(assemble([part], total=1),))
    flushed: tuple[Reply, ...] = ()
    parts: dict[int, RawPart] = {}
    completed: frozenset[str] = frozenset()
    if pending is not None:
        held = pending.parts.get(concat.part)
        if part.provider_message_id in pending.completed or (
            held is not None and held.provider_message_id == part.provider_message_id
        ):
            return Step(pending=pending, duplicate=True)
        completed = pending.completed
        if held is not None:
            flushed = (assemble(pending.parts.values(), total=pending.total),)
        else:
            parts = dict(pending.parts)
    parts[concat.part] = part
    if len(parts) == concat.total:
        reply = assemble(parts.values(), concat.total)
        done = PendingMessage(total=concat.total, completed=frozenset(reply.provider_message_ids))
        return Step(pending=done, replies=(*flushed, reply))
    return Step(
        pending=PendingMessage(total=concat.total, parts=parts, completed=completed),
        replies=flushed,
    )


def expire(pending: PendingMessage) -> Reply:
    """The reply of a message whose missing parts never came (complete=False)."""
    return assemble(pending.parts.values(), total=pending.total)


def assemble(parts: Iterable[RawPart], total: int) -> Reply:
    """Join parts by part number; a missing part shows as GAP_MARKER."""
    by_number = {p.concat.part if p.concat else 1: p for p in parts}
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
    return Reply(
        reply_id=reply_id(first, ids),
        channel=first.channel,
        sender=first.sender,
        recipient=first.recipient,
        text=text,
        keyword=keyword_of(text),
        is_stop=stop_source(text, message_type) is not None,
        stop_source=stop_source(text, message_type),
        parts_expected=total,
        parts_received=len(by_number),
        complete=complete,
        received_at_ms=min(p.received_at_ms for p in ordered),
        provider_message_ids=ids,
    )


def reply_id(first: RawPart, provider_ids: tuple[str, ...]) -> str:
    """Deterministic id: the same callbacks always give the same id, whatever the encoding.

    Long number: the provider's message ids of the parts. Short number: its
    ``message_id`` names the campaign message replied to, not the reply, so the
    sender, type and text are part of the identity.
    """
    if first.channel == "short_number":
        identity = ("short_number", first.sender, *provider_ids, first.message_type, first.text)
    else:
        identity = ("long_number", first.sender, first.recipient or "", *provider_ids)
    return hashlib.blake2b("\x1f".join(identity).encode(), digest_size=16).hexdigest()
