"""The sink kit on the webhook sink, read back through a receiver that follows docs/webhook.md.

The webhook sink stores nothing itself: "the store" is the receiver, which
verifies the signature and keeps the first version of each reply_id. The kit
then proves the sink gives such a receiver every column of every reply, with
stable reply_ids, and converts outages and refusals as the contract says.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from sms_replies.records import Reply
from sms_replies.schema import COLUMNS
from sms_replies.sinks.base import Sink
from sms_replies.sinks.testing import ReadBack, SinkConformance, make_reply
from sms_replies.sinks.webhook import WebhookSink
from tests.integration.webhook_receiver import Receiver

pytestmark = pytest.mark.integration

SECRET = b"kit-secret-0123456789"
TIMESTAMPS = [c.name for c in COLUMNS if c.type == "timestamp"]


def as_row(item: dict[str, Any]) -> dict[str, Any]:
    """A JSON item as a receiver storing it would type it."""
    row = dict(item)
    for name in TIMESTAMPS:
        if row[name] is not None:
            row[name] = datetime.fromisoformat(row[name])
    return row


class TestWebhookSinkContract(SinkConformance):
    @pytest.fixture
    def receiver(self) -> Iterator[Receiver]:
        receiver = Receiver(SECRET)
        receiver.start()
        yield receiver
        receiver.stop()

    @pytest.fixture
    def sink(self, receiver: Receiver) -> Sink:
        return WebhookSink(receiver.url, SECRET, timeout=10, max_batch=300)

    @pytest.fixture
    def read_back(self, receiver: Receiver) -> ReadBack:
        async def rows() -> list[dict[str, Any]]:
            assert all(d.signature_ok for d in receiver.deliveries)
            return [as_row(item) for item in receiver.stored.values()]

        return rows

    @pytest.fixture
    def broken_sink(self) -> Iterator[Sink]:
        # A socket that accepts connections and never answers: the timeout must convert.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            port = silent.getsockname()[1]
            url = f"http://127.0.0.1:{port}/in"
            yield WebhookSink(url, SECRET, timeout=0.3, max_attempts=2, backoff_initial=0.05)

    @pytest.fixture
    def rejected_reply(self, receiver: Receiver) -> Reply:
        refused = make_reply(7, prefix="refused")
        receiver.refuse.add(refused.reply_id)
        return refused
