"""The records shared by the three stages, and the topic names.

``ingest`` publishes :class:`RawPart` records to ``Topics.raw`` (several
callbacks of one partition as one :class:`RawGroup` record); ``streams``
reassembles them into :class:`Reply` records on ``Topics.replies``; ``sinks``
write replies to storage. Records travel as orjson-encoded JSON objects with a
schema version ``v`` so that consumers can reject what they do not understand.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
import orjson

from sms_replies.errors import SmsRepliesError

Channel = Literal["long_number", "short_number"]
StopSource = Literal["provider", "text"]

SCHEMA_VERSION: Final = 1

# Bounds that make every decoded value writable: a time every store and
# ``datetime`` can hold (years 1970..9999), counts that fit a 32-bit integer.
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799_999)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]

#: The provider's ``message-timestamp``: UTC, no zone, whole seconds.
PROVIDER_TIMESTAMP_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
_PROVIDER_TIMESTAMP_SHAPE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}(:[0-9]{2}){2}")


# Read twice a part in the worker (bounds, then the reply); callbacks of the same
# second share their timestamp. Errors are not cached (lru_cache caches returns only).
@functools.lru_cache(maxsize=4096)
def provider_time_ms(value: str) -> int:
    """``'2016-03-09 16:00:30'`` (UTC) as epoch milliseconds.

    ValueError unless it has exactly that shape and is a real time from 1970 on
    (what every store can hold; the message is safe to answer, it does not echo
    the input).
    """
    if not _PROVIDER_TIMESTAMP_SHAPE.fullmatch(value):
        raise ValueError("expected YYYY-MM-DD HH:MM:SS (UTC)")
    try:
        # The shape is checked: fixed positions, ASCII digits. A tenth of strptime's
        # cost (the worker reads it twice a part); datetime() refuses what strptime does.
        parsed = datetime(
            int(value[0:4]),
            int(value[5:7]),
            int(value[8:10]),
            int(value[11:13]),
            int(value[14:16]),
            int(value[17:19]),
            tzinfo=UTC,
        )
    except ValueError:  # 2016-02-30, 24:00:00...; the message must not echo the input
        raise ValueError("not a real date and time (YYYY-MM-DD HH:MM:SS, UTC)") from None
    if parsed.year < 1970:
        raise ValueError("a time from 1970-01-01 00:00:00 UTC on")
    return int(parsed.timestamp()) * 1000


class RecordDecodeError(SmsRepliesError, ValueError):
    """A topic record that is not a valid record of the expected kind."""


@dataclass(frozen=True, slots=True)
class Concat:
    """The concatenation header of one part of a long SMS."""

    ref: int
    total: int
    part: int


@dataclass(frozen=True, slots=True)
class RawPart:
    """One validated, normalised callback: a whole short reply or one part of a long one."""

    channel: Channel
    sender: str  # E.164 with '+'
    recipient: str | None  # E.164 with '+'; None for the short number
    text: str
    provider_message_id: str
    message_type: str  # text | unicode | binary | response | stop
    received_at_ms: EpochMs  # when the ingress accepted it, UTC epoch milliseconds
    concat: Concat | None = None
    provider_timestamp: str | None = None  # provider's 'message-timestamp', as sent
    # Our callback URL's own query parameters (per-campaign urlResponse), not the provider's.
    campaign: str | None = None
    tag: str | None = None

    @property
    def reassembly_key(self) -> str | None:
        """Key of the long message this part belongs to; None for a single message.

        concat-ref is a small per-handset counter: it repeats across senders and
        wraps, so the key carries recipient, sender and total as well.
        """
        if self.concat is None:
            return None
        c = self.concat
        return f"{self.recipient or ''}|{self.sender}|{c.ref}|{c.total}"

    @property
    def partition_key(self) -> bytes:
        """Kafka key: every part of one long SMS lands on the same partition."""
        return (self.reassembly_key or self.sender).encode()

    def as_dict(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, **_asdict(self)}

    def encode(self) -> bytes:
        return _VERSION_FIRST + orjson.dumps(self)[1:]  # as Reply.encode

    @classmethod
    def decode(cls, data: bytes) -> RawPart:
        """Typed: a field of the wrong type or out of its bounds is a RecordDecodeError."""
        _check_version(data)
        return _typed(_RAW_PART_DECODER, data, "RawPart")

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> RawPart:
        fields = dict(fields)
        if fields.pop("v", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise RecordDecodeError("unsupported schema version")
        try:
            concat = fields.pop("concat", None)
            return cls(**fields, concat=Concat(**concat) if concat else None)
        except TypeError as exc:
            raise RecordDecodeError(f"not a RawPart record: {exc}") from None


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete (or, after expiry, incomplete) reply: a row of the ``replies`` table."""

    reply_id: str
    channel: Channel
    sender: str
    recipient: str | None
    text: str
    keyword: str
    is_stop: bool
    stop_source: StopSource | None
    parts_expected: Count
    parts_received: Count
    complete: bool
    received_at_ms: EpochMs
    provider_message_ids: tuple[str, ...]
    last_part_at_ms: EpochMs | None = None  # when the last part arrived; None: same as received
    late: bool = False  # a part that arrived after its message expired, published alone
    # The provider's 'message-timestamp' (UTC) of the earliest part; None: not sent.
    # Optional with a default: records written before it decode as before.
    provider_sent_at_ms: EpochMs | None = None
    # The callback URL's campaign/tag parameters, from the first part that had them.
    campaign: str | None = None
    tag: str | None = None

    def encode(self) -> bytes:
        # msgspec writes the dataclass itself, fields in order (one C pass, no dict):
        # the same object as {"v": 1, **fields}, the version put in front. The bytes
        # orjson wrote, at half its cost (one encode per reply the worker publishes);
        # tests/unit/test_record_encoding.py compares them.
        return _VERSION_FIRST + _ENCODER.encode(self)[1:]

    @classmethod
    def decode(cls, data: bytes) -> Reply:
        """Typed: a field of the wrong type or out of its bounds is a RecordDecodeError."""
        _check_version(data)
        return _typed(_REPLY_DECODER, data, "Reply")


@dataclass(frozen=True, slots=True)
class ExpiryTick:
    """A clock record on the raw topic: 'it is now ``now_ms``' for the partition it lands on.

    Expiry runs inside the stream, as an event of the partition that owns the
    keys, so table updates and their changelog stay partition-consistent and
    survive restarts and rebalances like any other event.
    """

    now_ms: int

    def encode(self) -> bytes:
        return orjson.dumps({"v": SCHEMA_VERSION, "tick_ms": self.now_ms})


@dataclass(frozen=True, slots=True)
class RawGroup:
    """Several callbacks in one raw record, all of the partition it is written to.

    The ingress groups the callbacks it accepts in the same moment, one record
    per partition: the worker pays Faust's per-record cost once per group
    (docs/benchmarks.md, Reassembly). Each part is the object :meth:`RawPart.encode`
    writes, so a group is ``{"v": 1, "parts": [part, ...]}``.
    """

    parts: tuple[RawPart, ...]

    @staticmethod
    def encode_parts(encoded_parts: Sequence[bytes]) -> bytes:
        """The group of parts already encoded by :meth:`RawPart.encode` (no second encode)."""
        return b'{"v":%d,"parts":[%b]}' % (SCHEMA_VERSION, b",".join(encoded_parts))

    def encode(self) -> bytes:
        return self.encode_parts([part.encode() for part in self.parts])


def decode_raw(data: bytes) -> RawPart | RawGroup | ExpiryTick:
    """A record of the raw topic: a callback part, a group of them, or an expiry tick.

    Typed, as :meth:`RawPart.decode`: one bad part makes the whole group a
    RecordDecodeError; :func:`split_group` gives each part's bytes to tell them apart.
    """
    head = _check_version(data)
    if head.tick_ms is not None:
        return ExpiryTick(now_ms=head.tick_ms)
    if head.parts:
        return RawGroup(tuple(_typed(_GROUP_DECODER, data, "RawGroup").parts))
    return _typed(_RAW_PART_DECODER, data, "RawPart")


def split_group(data: bytes) -> list[bytes] | None:
    """The bytes of each part of a :class:`RawGroup` record; None if ``data`` is not one."""
    try:
        return [bytes(part) for part in _GROUP_SPLITTER.decode(data).parts]
    except msgspec.DecodeError:  # ValidationError included
        return None


@dataclass(frozen=True, slots=True)
class ReplyGroup:
    """Several replies in one record of the replies topic, all of the partition it is on.

    The worker writes the replies of one batch that fall on the same partition
    as one record: a producer's send and a sink's record cost paid once per
    group (docs/benchmarks.md, Reassembly). Each reply is the object
    :meth:`Reply.encode` writes, so a group is ``{"v": 1, "replies": [reply, ...]}``;
    a reply alone is still its plain record.
    """

    replies: tuple[Reply, ...]

    @staticmethod
    def encode_replies(encoded_replies: Sequence[bytes]) -> bytes:
        """The group of replies already encoded by :meth:`Reply.encode` (no second encode)."""
        return b'{"v":%d,"replies":[%b]}' % (SCHEMA_VERSION, b",".join(encoded_replies))

    def encode(self) -> bytes:
        return self.encode_replies([reply.encode() for reply in self.replies])


def decode_replies(data: bytes) -> list[Reply]:
    """The replies of a record of the replies topic: a reply alone, or a group of them.

    Typed, as :meth:`Reply.decode`: one bad reply makes the whole group a
    RecordDecodeError; :func:`split_replies` gives each reply's bytes to tell them apart.
    """
    head = _check_version(data)
    if head.replies:
        return _typed(_REPLY_GROUP_DECODER, data, "ReplyGroup").replies
    return [_typed(_REPLY_DECODER, data, "Reply")]


def is_reply_group(data: bytes) -> bool:
    """Whether ``data`` is a :class:`ReplyGroup` record (of any validity inside)."""
    try:
        return bool(_HEAD_DECODER.decode(data).replies)
    except msgspec.DecodeError:
        return False


def split_replies(data: bytes) -> list[bytes] | None:
    """The bytes of each reply of a :class:`ReplyGroup` record; None if ``data`` is not one."""
    try:
        return [bytes(reply) for reply in _REPLY_GROUP_SPLITTER.decode(data).replies]
    except msgspec.DecodeError:  # ValidationError included
        return None


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names, derived from one prefix so that test runs can isolate themselves."""

    raw: str
    replies: str
    rejects: str
    dead_letter: str

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(
            raw=f"{prefix}.raw",
            replies=f"{prefix}.replies",
            rejects=f"{prefix}.rejects",
            dead_letter=f"{prefix}.dead-letter",
        )


#: A record's JSON object opens with its schema version (the record has fields: never '{}').
_VERSION_FIRST: Final = b'{"v":%d,' % SCHEMA_VERSION


def _asdict(record: Any) -> dict[str, Any]:
    # On the worker's hot path: field names cached per class, not dataclasses.fields().
    return {name: _plain(getattr(record, name)) for name in _field_names(type(record))}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _plain(value: Any) -> Any:
    if hasattr(type(value), "__dataclass_fields__"):
        return _asdict(value)
    return value


class _Head(msgspec.Struct):
    """What every record carries: its schema version (and an expiry tick, its time)."""

    v: Any = None
    tick_ms: int | None = None
    parts: msgspec.Raw = msgspec.Raw()  # a group's parts, not decoded here
    replies: msgspec.Raw = msgspec.Raw()  # a group's replies, the same


# msgspec checks every field's type and bounds while it decodes, and is 4-7x
# faster than orjson plus the dataclass constructor it replaces (RawPart: the
# worker's hot path). Unknown fields are ignored, as before.
_HEAD_DECODER: Final = msgspec.json.Decoder(_Head)
_ENCODER: Final = msgspec.json.Encoder()
_RAW_PART_DECODER: Final = msgspec.json.Decoder(RawPart)
_REPLY_DECODER: Final = msgspec.json.Decoder(Reply)


class _Group(msgspec.Struct):
    parts: list[RawPart]


class _GroupSplit(msgspec.Struct):
    parts: list[msgspec.Raw]


class _ReplyGroup(msgspec.Struct):
    replies: list[Reply]


class _ReplyGroupSplit(msgspec.Struct):
    replies: list[msgspec.Raw]


_GROUP_DECODER: Final = msgspec.json.Decoder(_Group)
_GROUP_SPLITTER: Final = msgspec.json.Decoder(_GroupSplit)
_REPLY_GROUP_DECODER: Final = msgspec.json.Decoder(_ReplyGroup)
_REPLY_GROUP_SPLITTER: Final = msgspec.json.Decoder(_ReplyGroupSplit)


def _check_version(data: bytes) -> _Head:
    try:
        head = _HEAD_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise RecordDecodeError(f"not a record: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RecordDecodeError(f"not JSON: {exc}") from None
    if isinstance(head.v, bool) or head.v != SCHEMA_VERSION:
        raise RecordDecodeError(f"unsupported schema version {head.v!r}")
    return head


_T = TypeVar("_T")


def _typed(decoder: msgspec.json.Decoder[_T], data: bytes, kind: str) -> _T:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise RecordDecodeError(f"not a {kind} record: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RecordDecodeError(f"not JSON: {exc}") from None
