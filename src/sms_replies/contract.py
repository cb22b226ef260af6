"""Old name of :mod:`sms_replies.records` (the topic records), kept for code written before."""

from sms_replies.records import *  # noqa: F403
