"""A JSON Lines sink for sms-replies, registered as ``jsonl`` (example third-party package)."""

from sms_replies_jsonl.sink import JsonlSink, JsonlSinkSettings

__all__ = ["JsonlSink", "JsonlSinkSettings"]
