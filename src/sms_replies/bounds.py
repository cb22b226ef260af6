"""Size bounds of a reply's pieces, shared by the ingress and the worker (pure).

A part of a long SMS carries at most 153 GSM-7 or 67 UCS-2 characters, a
single SMS 160 or 70; the defaults leave room for text a provider decodes or
escapes, and for providers that send a long reply whole, as one message. The
ingress answers 400 beyond them; the worker checks every raw record again (it
cannot tell who wrote it) and sends what is beyond them to the dead-letter topic.

With the bounds, the state of one reassembly key has a worst-case encoded size
(:func:`worst_state_bytes`); settings whose worst case does not fit in one
broker record are refused at start. The worker still measures every record it
writes, so that a state written under other settings cannot stop it either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sms_replies.records import RawPart, RecordDecodeError, provider_time_ms

MAX_ID: Final = 100  # provider message id
MAX_PHONE: Final = 32  # a number as sent (E.164 once normalised: at most 16)
MAX_SENDER: Final = 66  # a stored sender: E.164, or its pseudonym 'h:' + 64 hex (privacy.py)
MAX_TYPE: Final = 16
MAX_TIMESTAMP: Final = 32
MAX_ATTRIBUTION: Final = 64  # campaign / tag parameter of the callback URL

#: A string field's JSON encoding takes at most 6 bytes per character (\\u00XX).
_BYTES_PER_CHAR: Final = 6
#: Everything of a stored part but its text, at most: field names, ids, numbers.
#: campaign and tag are printable ASCII: 2 bytes per character at most (\\ and \").
_PART_OVERHEAD: Final = (
    _BYTES_PER_CHAR
    * (MAX_PHONE + MAX_SENDER + MAX_ID + MAX_TYPE + MAX_TIMESTAMP + len("short_number"))
    + 2 * 2 * MAX_ATTRIBUTION
    + 512
)
#: Room left in a record for its key, headers and the record's framing.
RECORD_MARGIN: Final = 4096


@dataclass(frozen=True, slots=True)
class Bounds:
    max_part_text: int = 320
    max_single_text: int = 2000
    max_parts: int = 64
    max_record_bytes: int = 1_000_000

    @classmethod
    def of(cls, settings: Any) -> Bounds:
        """The bounds of a :class:`~sms_replies.settings.Settings`."""
        return cls(
            max_part_text=settings.max_part_text,
            max_single_text=settings.max_single_text,
            max_parts=settings.max_parts,
            max_record_bytes=settings.max_record_bytes,
        )

    @property
    def max_value_bytes(self) -> int:
        """Largest value the worker writes in one record (state, reply, dead letter)."""
        return self.max_record_bytes - RECORD_MARGIN

    def text_limit(self, part: RawPart) -> int:
        return self.max_single_text if part.concat is None else self.max_part_text


def worst_state_bytes(bounds: Bounds) -> int:
    """Upper bound of one key's encoded state under ``bounds``.

    A state holds the parts of the message in progress (at most total - 1) and
    those of the last closed message with its late parts (at most total, one
    per part number): 2 x total - 1 parts. A reply holds fewer bytes than that.
    """
    per_part = _BYTES_PER_CHAR * bounds.max_part_text + _PART_OVERHEAD
    largest_state = (2 * bounds.max_parts - 1) * per_part + 512
    largest_single = _BYTES_PER_CHAR * bounds.max_single_text + _PART_OVERHEAD
    return max(largest_state, largest_single)


def check_part(part: RawPart, bounds: Bounds) -> None:
    """Raise RecordDecodeError unless every field has its type and is within bounds."""
    _string(part.channel, "channel", len("short_number"))
    if part.channel not in ("long_number", "short_number"):
        raise RecordDecodeError(f"unknown channel {part.channel!r}")
    _string(part.sender, "sender", MAX_SENDER)
    if part.recipient is not None:
        _string(part.recipient, "recipient", MAX_PHONE)
    _string(part.provider_message_id, "provider_message_id", MAX_ID)
    _string(part.message_type, "message_type", MAX_TYPE)
    if part.provider_timestamp is not None:
        _string(part.provider_timestamp, "provider_timestamp", MAX_TIMESTAMP)
        try:
            provider_time_ms(part.provider_timestamp)
        except ValueError as exc:
            raise RecordDecodeError(f"provider_timestamp: {exc}") from None
    for name, value in (("campaign", part.campaign), ("tag", part.tag)):
        if value is not None:
            _string(value, name, MAX_ATTRIBUTION)
            if not is_attribution(value):
                raise RecordDecodeError(f"{name} is not printable ASCII")
    _integer(part.received_at_ms, "received_at_ms", 0, 2**63 - 1)
    _string(part.text, "text", bounds.text_limit(part))
    concat = part.concat
    if concat is not None:
        _integer(concat.total, "concat.total", 1, bounds.max_parts)
        _integer(concat.part, "concat.part", 1, concat.total)
        _integer(concat.ref, "concat.ref", 0, 65535)


def check_decoded_part(part: RawPart, bounds: Bounds) -> None:
    """:func:`check_part` of a part msgspec decoded (``RawPart.decode``, ``decode_raw``).

    msgspec checked every field's type (and ``received_at_ms``'s range): what is left
    is the bounds, compared here at a third of :func:`check_part`'s cost (the worker
    checks every part). Beyond them, :func:`check_part` raises its own error.
    """
    concat = part.concat
    timestamp = part.provider_timestamp
    campaign = part.campaign
    tag = part.tag
    recipient = part.recipient
    if (
        len(part.sender) <= MAX_SENDER
        and (recipient is None or len(recipient) <= MAX_PHONE)
        and len(part.provider_message_id) <= MAX_ID
        and len(part.message_type) <= MAX_TYPE
        and (timestamp is None or (len(timestamp) <= MAX_TIMESTAMP and _is_time(timestamp)))
        and (campaign is None or is_attribution(campaign))
        and (tag is None or is_attribution(tag))
        and 0 <= part.received_at_ms <= 2**63 - 1
        and (
            len(part.text) <= bounds.max_single_text
            if concat is None
            else len(part.text) <= bounds.max_part_text
            and 1 <= concat.total <= bounds.max_parts
            and 1 <= concat.part <= concat.total
            and 0 <= concat.ref <= 65535
        )
        and part.channel in ("long_number", "short_number")
    ):
        return
    check_part(part, bounds)


def _is_time(provider_timestamp: str) -> bool:
    try:
        provider_time_ms(provider_timestamp)
    except ValueError:
        return False
    return True


def is_attribution(value: str) -> bool:
    """A campaign or tag value: 1 to MAX_ATTRIBUTION printable ASCII characters."""
    return 0 < len(value) <= MAX_ATTRIBUTION and all(" " <= char <= "~" for char in value)


def _string(value: object, name: str, limit: int) -> None:
    if not isinstance(value, str):
        raise RecordDecodeError(f"{name} is not a string")
    if len(value) > limit:
        raise RecordDecodeError(f"{name} of {len(value)} characters, beyond {limit}")


def _integer(value: object, name: str, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordDecodeError(f"{name} is not an integer")
    if not low <= value <= high:
        raise RecordDecodeError(f"{name} {value} is outside {low}..{high}")
