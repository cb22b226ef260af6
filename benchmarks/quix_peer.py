"""The peer: a quix-streams job doing the worker's job, as a user of that library would write it.

Same raw topic, same records, same work as ``sms-replies worker``: each part is
decoded; a single reply is published at once; a part of a long reply goes to
RocksDB state (quix-streams' own, with its changelog topic) under the record's
key until every part is there, then the reply is published and the key keeps a
tombstone (the provider ids of the finished reply, so a redelivered part is
recognised) instead of the parts. Each reply carries the worker's fields:
deterministic id, joined text, keyword and STOP check (the project's own pure
functions). At least once, quix-streams' defaults otherwise.

Run by benchmarks.reassembly in its own process::

    python -m benchmarks.quix_peer BOOTSTRAP RAW_TOPIC REPLIES_TOPIC GROUP STATE_DIR
"""

from __future__ import annotations

import hashlib
import sys
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


def reassemble(part: dict[str, Any], state: Any) -> list[dict[str, Any]]:
    if "tick_ms" in part:  # the worker's expiry clock: not this job's concern
        return []
    concat = part.get("concat")
    if concat is None:
        return [reply_of([part], 1)]
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
    from quixstreams import Application
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
    sdf = sdf.apply(reassemble, stateful=True, expand=True)
    sdf.to_topic(replies)
    app.run()


if __name__ == "__main__":
    main(*sys.argv[1:6])
