"""Dead-letter envelopes: what a stage could not handle, with what it takes to replay it.

A record of the dead-letter topic is a JSON object:

``stage`` (the worker: ``"reassembly"``) or ``sink`` (a sink's name), ``error``,
``record`` (the record as text, invalid UTF-8 replaced), and since they can be
replayed: ``topic`` (where the record came from), ``key``, ``partition`` and
``offset`` there, ``record_base64`` when the record is not valid UTF-8 (the
exact bytes), ``truncated`` when the record was cut to fit the broker's limit
(such a one cannot be replayed).

Older envelopes carry no ``topic``: :func:`parse` infers it from the stage
(``reassembly`` read the raw topic, sinks the replies topic) and derives the
key from the record, as the producers do.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from sms_replies.errors import SmsRepliesError
from sms_replies.records import ExpiryTick, RawGroup, RecordDecodeError, Topics, decode_raw


def envelope(
    *,
    origin: tuple[str, str],
    error: str,
    value: bytes,
    topic: str | None,
    key: bytes | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> dict[str, Any]:
    """The envelope of ``value``; ``origin`` is ("stage" or "sink", its name)."""
    fields: dict[str, Any] = {origin[0]: origin[1], "error": error}
    try:
        fields["record"] = value.decode("utf-8")
    except UnicodeDecodeError:
        fields["record"] = value.decode("utf-8", "replace")
        fields["record_base64"] = base64.b64encode(value).decode()
    fields["topic"] = topic
    if key is not None:
        fields["key"] = key.decode("utf-8", "replace")
    if partition is not None:
        fields["partition"] = partition
        fields["offset"] = offset
    return fields


# Below the broker's 1 MB record limit, with room for the envelope's other fields.
MAX_ENVELOPE_BYTES = 900_000


def encode(fields: dict[str, Any]) -> bytes:
    """The envelope as JSON, the record cut (``truncated``) if it would not fit."""
    encoded = orjson.dumps(fields)
    if len(encoded) <= MAX_ENVELOPE_BYTES:
        return encoded
    record = str(fields.get("record", ""))
    cut = {k: v for k, v in fields.items() if k != "record_base64"}
    cut.update(record=record[: MAX_ENVELOPE_BYTES // 8], truncated=True)
    return orjson.dumps(cut)


class NotReplayable(SmsRepliesError, ValueError):
    """A dead letter that cannot be re-published as it was."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, read back."""

    partition: int  # where it is in the dead-letter topic
    offset: int
    timestamp_ms: int  # when it was dead-lettered (the broker's record time)
    origin: str  # "sink duckdb", "stage reassembly", or "unknown"
    error: str
    record: str
    source_topic: str | None  # None: not known (not an envelope, an unknown stage)
    source_key: bytes | None
    source_partition: int | None
    source_offset: int | None
    value: bytes | None  # the exact bytes to replay; None: cut or unreadable
    fields: dict[str, Any]  # the envelope as stored

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"

    def replay(self) -> tuple[str, bytes | None, bytes]:
        """(topic, key, value) to re-publish; NotReplayable when it cannot be."""
        if self.source_topic is None:
            raise NotReplayable(f"{self.id}: the topic it came from is not known")
        if self.value is None:
            raise NotReplayable(f"{self.id}: the record was cut or is unreadable")
        return self.source_topic, self.source_key, self.value


def parse(
    value: bytes | None, topics: Topics, *, partition: int, offset: int, timestamp_ms: int
) -> DeadLetter:
    """A dead-letter record, old or new; never raises (an unreadable one is shown as such)."""
    try:
        fields = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        fields = None
    if not isinstance(fields, dict):
        text = (value or b"").decode("utf-8", "replace")
        return DeadLetter(
            partition, offset, timestamp_ms, "unknown", "not a dead-letter envelope", text,
            None, None, None, None, None, {},
        )  # fmt: skip
    if "sink" in fields:
        origin, default_topic = f"sink {fields['sink']}", topics.replies
    elif fields.get("stage") == "reassembly":
        origin, default_topic = "stage reassembly", topics.raw
    else:
        origin, default_topic = f"stage {fields.get('stage', 'unknown')}", None
    record = str(fields.get("record", ""))
    exact: bytes | None = record.encode()
    if "record_base64" in fields:
        exact = base64.b64decode(str(fields["record_base64"]))
    if fields.get("truncated"):
        exact = None
    topic = fields.get("topic") or default_topic
    key = fields.get("key")
    source_key = key.encode() if isinstance(key, str) else _derived_key(exact, topic, topics)
    return DeadLetter(
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp_ms,
        origin=origin,
        error=str(fields.get("error", "")),
        record=record,
        source_topic=topic,
        source_key=source_key,
        source_partition=_int_or_none(fields.get("partition")),
        source_offset=_int_or_none(fields.get("offset")),
        value=exact,
        fields=fields,
    )


def _derived_key(value: bytes | None, topic: str | None, topics: Topics) -> bytes | None:
    """The key its producer gave it (old envelopes): reply_id, or the part's partition key."""
    if value is None:
        return None
    if topic == topics.replies:
        try:
            reply_id = orjson.loads(value).get("reply_id")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return reply_id.encode() if isinstance(reply_id, str) else None
    if topic == topics.raw:
        try:
            record = decode_raw(value)
        except RecordDecodeError:
            return None
        if isinstance(record, ExpiryTick):
            return None
        if isinstance(record, RawGroup):  # its parts are all on its first part's partition
            return record.parts[0].partition_key if record.parts else None
        return record.partition_key
    return None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
