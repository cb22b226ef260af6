"""The Kafka side: the embedded Tansu broker, topic administration, end offsets."""

from sms_replies.broker.admin import ensure_topics, wait_for_topics
from sms_replies.broker.embedded import EmbeddedBroker
from sms_replies.broker.tansu import end_offsets

__all__ = ["EmbeddedBroker", "end_offsets", "ensure_topics", "wait_for_topics"]
