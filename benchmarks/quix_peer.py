"""The peer: a quix-streams job doing the worker's job, as a user of that library would write it.

Same raw topic, same records, same work as ``sms-replies worker``: each record
is decoded (quix-streams' JSON deserialiser), and each callback in it (a record
is one part, or a group ``{"v": 1, "parts": [...]}`` of callbacks of its
partition, as the ingress writes them) handled on its own: a single reply is
published at once; a part of a long reply goes to RocksDB state (quix-streams'
own, with its changelog topic) under the part's own key (as the worker's table:
recipient|sender|ref|total) until every part is there, then the reply is
published and the key keeps a tombstone (the provider ids of the finished reply,
so a redelivered part is recognised) instead of the parts. Each reply carries the worker's fields:
deterministic id, joined text, keyword and STOP check (the project's own pure
functions). At least once, quix-streams' defaults otherwise.

Run by benchmarks.reassembly in its own process::

    python -m benchmarks.quix_peer BOOTSTRAP RAW_TOPIC REPLIES_TOPIC GROUP STATE_DIR
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from typing import Any

from sms_replies.optout import keyword_of, stop_source
from sms_replies.records import SCHEMA_VERSION

# Tansu's DescribeConfigs answers only the configs a topic was created with (broker.md):
# quix-streams derives its changelog topics' configs from the source topic's, so the
# topics it creates itself must name these.
TOPIC_CONFIGS = {"cleanup.policy": "delete", "retention.ms": "604800000", "retention.bytes": "-1"}


def reply_of(parts: list[dict[str, Any]], total: int) -> dict[str, Any]:
    first = parts[0]
    text = "".join(p["text"] for p in parts)
    ids = [p["provider_message_id"] for p in parts]
    identity = ("long_number", first["sender"], first["recipient"] or "", *ids)
    message_type = first["message_type"]
    source = stop_source(text, message_type)
    return {
        "v": SCHEMA_VERSION,
        "reply_id": hashlib.blake2b("\x1f".join(identity).encode(), digest_size=16).hexdigest(),
        "channel": first["channel"],
        "sender": first["sender"],
        "recipient": first["recipient"],
        "text": text,
        "keyword": keyword_of(text),
        "is_stop": source is not None,
        "stop_source": source,
        "parts_expected": total,
        "parts_received": len(parts),
        "complete": True,
        "received_at_ms": min(p["received_at_ms"] for p in parts),
        "provider_message_ids": ids,
        "last_part_at_ms": max(p["received_at_ms"] for p in parts),
        "late": False,
    }


def handle(record: dict[str, Any], state_of: Callable[[bytes], Any]) -> list[dict[str, Any]]:
    """The replies of one raw record; ``state_of(key)``: the state under a part's key."""
    if "tick_ms" in record:  # the worker's expiry clock: not this job's concern
        return []
    parts = record.get("parts")
    if parts is None:
        return reassemble(record, state_of)
    replies = []
    for part in parts:
        replies += reassemble(part, state_of)
    return replies


def reassemble(part: dict[str, Any], state_of: Callable[[bytes], Any]) -> list[dict[str, Any]]:
    concat = part.get("concat")
    if concat is None:
        return [reply_of([part], 1)]
    # The key of the worker's table (RawPart.reassembly_key), also the record's key
    # when the part travels alone.
    key = f"{part['recipient'] or ''}|{part['sender']}|{concat['ref']}|{concat['total']}"
    state = state_of(key.encode())
    held = state.get("message") or {"parts": {}, "closed": []}
    part_id = part["provider_message_id"]
    if part_id in held["closed"]:
        return []  # a redelivered part of a finished reply
    parts = held["parts"]
    parts[str(concat["part"])] = part
    total = concat["total"]
    if len(parts) < total:
        state.set("message", held)
        return []
    ordered = [parts[str(n)] for n in range(1, total + 1)]
    state.set("message", {"parts": {}, "closed": [p["provider_message_id"] for p in ordered]})
    return [reply_of(ordered, total)]


def main(bootstrap: str, source: str, sink: str, group: str, state_dir: str) -> None:
    from quixstreams import Application, message_context
    from quixstreams.models import TopicConfig

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    config = TopicConfig(num_partitions=8, replication_factor=1, extra_config=TOPIC_CONFIGS)
    raw = app.topic(source, value_deserializer="json", config=config)
    replies = app.topic(sink, value_serializer="json", config=config)
    sdf = app.dataframe(raw)
    # State under each part's key, not the record's (a group holds parts of several
    # keys of its partition): what StreamingDataFrame.apply(stateful=True) does for
    # the record's key, with the part's key, on the partition's own store.
    sdf.register_store()
    context = sdf.processing_context

    def handle_record(record: dict[str, Any]) -> list[dict[str, Any]]:
        transaction = context.checkpoint.get_store_transaction(
            stream_id=sdf.stream_id, partition=message_context().partition
        )
        return handle(record, transaction.as_state)

    sdf.apply(handle_record, expand=True).to_topic(replies)
    app.run()


if __name__ == "__main__":
    main(*sys.argv[1:6])
