"""sms-replies: capture, reassemble and store the replies to SMS Partner campaigns."""

from sms_replies.contract import RawPart, Reply, Topics
from sms_replies.errors import (
    BrokerUnavailable,
    ConfigError,
    InvalidCallback,
    SinkWriteError,
    SmsRepliesError,
)

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "InvalidCallback",
    "RawPart",
    "Reply",
    "SinkWriteError",
    "SmsRepliesError",
    "Topics",
]
__version__ = "0.1.0"
