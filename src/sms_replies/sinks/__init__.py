"""Sinks: write complete replies to analytics storage.

A sink implements :class:`Sink` (one ``write(batch)``); :mod:`.runner` feeds it
batches from the replies topic with its own consumer group and commits offsets
only after the batch is written. Third-party sinks register under the
``sms_replies.sinks`` entry-point group (see ``docs/sinks.md``).
"""

from sms_replies.sinks.base import Sink
from sms_replies.sinks.registry import available_sinks, load_sink

__all__ = ["Sink", "available_sinks", "load_sink"]
