"""Opt-outs pushed to SMS Partner's stop list: a sink plugin for sms-replies (example package).

Registered as ``smspartner-stoplist``; see :mod:`.sink` and the package README.
"""

from sms_replies_smspartner.sink import SmsPartnerSettings, SmsPartnerStopListSink

__all__ = ["SmsPartnerSettings", "SmsPartnerStopListSink"]
