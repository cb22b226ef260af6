"""sms-replies: capture, reassemble and store the replies to SMS Partner campaigns.

Where to look:

- ``ingest/``: the HTTP ingress (``app.py`` the routes, ``parsing.py`` the two
  callback shapes, ``signature.py``, ``publisher.py`` to the raw topic,
  ``grouping.py`` several callbacks a record).
- ``streams/``: the Faust worker (``app.py`` configuration and wiring,
  ``handler.py`` each batch, ``reassembly.py`` the pure logic and ``KeyState``).
- ``sinks/``: the stores (``base.py`` the guarantees, ``runner.py`` the consumer
  loop, ``testing.py`` the conformance kit); ``sms_replies.sinks`` is the one
  import for sink authors.
- ``analytics/``: ``stats``, campaigns, retention/erase, the API and dashboard.
- ``broker/``: the embedded broker, topics, worker-state re-seed, and every
  workaround for it (``tansu.py``).
- ``records.py`` the topic records, ``settings.py`` the one configuration,
  ``errors.py`` the exception tree, ``supervisor.py`` what ``run`` starts.
"""

from sms_replies.errors import (
    BrokerUnavailable,
    ConfigError,
    InvalidCallback,
    SinkWriteError,
    SmsRepliesError,
)
from sms_replies.records import RawGroup, RawPart, Reply, Topics

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "InvalidCallback",
    "RawGroup",
    "RawPart",
    "Reply",
    "SinkWriteError",
    "SmsRepliesError",
    "Topics",
]
__version__ = "0.1.0"
