"""The callback query's parameters: the split of a query without escapes is yarl's."""

from __future__ import annotations

import string

from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from sms_replies.ingest.app import CALLBACK_PATH, _query

# What a request target's query may hold without escapes (RFC 3986 query characters,
# '+' and the separators '&' and '=' often).
_QUERY_CHARS = string.ascii_letters + string.digits + "-._~!$'()*+,;:@/?" + "&&&===++"


@given(st.text(alphabet=_QUERY_CHARS, max_size=80))
def test_a_query_without_escapes_splits_as_yarl_decodes_it(raw: str) -> None:
    request = make_mocked_request("GET", f"{CALLBACK_PATH}?{raw}")
    assert "%" not in request.rel_url.raw_query_string
    assert _query(request) == (list(request.query.items()), 0)


def test_escapes_and_plus_signs_are_decoded() -> None:
    request = make_mocked_request("GET", f"{CALLBACK_PATH}?text=Oui+merci%21&a=%2B&&b&=c&d=")
    assert _query(request) == (
        [("text", "Oui merci!"), ("a", "+"), ("b", ""), ("", "c"), ("d", "")],
        0,
    )
    plain = make_mocked_request("GET", f"{CALLBACK_PATH}?text=Oui+merci!&a=+&&b&=c&d=")
    assert _query(plain) == (
        [("text", "Oui merci!"), ("a", " "), ("b", ""), ("", "c"), ("d", "")],
        0,
    )


def test_bytes_that_are_not_utf8_are_read_as_windows_1252_and_counted() -> None:
    request = make_mocked_request("GET", f"{CALLBACK_PATH}?text=caf%E9")
    assert _query(request) == ([("text", "café")], 1)
