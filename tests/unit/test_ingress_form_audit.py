"""Percent-decoding without U+FFFD and the bounds of audit records (pure functions)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from sms_replies.ingest.audit import TokenBucket, audit_record, clip
from sms_replies.ingest.form import FormDecodeError, decode_text, parse_form


def test_utf8_first_then_windows_1252() -> None:
    assert decode_text("réponse".encode()) == ("réponse", False)
    assert decode_text("réponse".encode("latin-1")) == ("réponse", True)
    assert decode_text(b"\x80 \x92 \x9c") == ("€ \u2019 œ", True)
    # The five bytes Windows-1252 leaves undefined read as C1 controls (WHATWG).
    assert decode_text(b"a\x81\x9d") == ("a\x81\x9d", True)


def test_parse_form_splits_like_a_browser_and_counts_fallbacks() -> None:
    pairs, fallbacks = parse_form(b"a=1+2&b=&c&=d&e=%3D%26&t=r%E9p&u=%C3%A9&&")
    assert pairs == [
        ("a", "1 2"),
        ("b", ""),
        ("c", ""),
        ("", "d"),
        ("e", "=&"),
        ("t", "rép"),
        ("u", "é"),
    ]
    assert fallbacks == 1


def test_declared_charset_is_strict() -> None:
    assert parse_form(b"t=r%E9p", "iso-8859-1") == ([("t", "rép")], 0)
    assert parse_form(b"t=r%C3%A9p", "UTF-8") == ([("t", "rép")], 0)
    with pytest.raises(FormDecodeError, match="unknown charset"):
        parse_form(b"t=1", "bogus")
    with pytest.raises(FormDecodeError, match="not valid ascii"):
        parse_form(b"t=%E9", "us-ascii")


@given(st.binary(max_size=200))
def test_any_bytes_decode_without_replacement_characters(raw: bytes) -> None:
    text, _ = decode_text(raw)
    assert "\ufffd" not in text or "\ufffd".encode() in raw


@given(st.text(max_size=300), st.integers(min_value=2, max_value=200))
def test_clip_fits_the_json_budget(text: str, budget: int) -> None:
    kept, cut = clip(text, budget)
    assert len(orjson.dumps(kept)) <= budget
    assert text.startswith(kept)
    assert cut == (kept != text)


def test_worst_case_audit_record_stays_bounded() -> None:
    nasty = "\x01" * 20_000  # each character is 6 bytes of JSON
    record = audit_record(
        status=400,
        reason="invalid callback",
        problems={f"{nasty}{n}": "parameter given more than once" for n in range(50)},
        method="POST",
        path="/" + nasty,
        query=[(f"k{n}{nasty}", nasty) for n in range(50)] + [("token", "secret")],
        content_type="text/" + nasty,
        body=nasty.encode() + b"\xff" * 20_000,
        remote="203.0.113.9",
        received_at_ms=0,
        max_bytes=4096,
    )
    decoded = orjson.loads(record)
    # body, query and problems 4 KiB each, path 1 KiB, the rest small.
    assert len(record) <= 3 * 4096 + 2048
    assert set(decoded["truncated"]) == {"body", "content_type", "path", "problems", "query"}
    assert "secret" not in record.decode()


def test_audit_keeps_undecodable_bytes_visible() -> None:
    record = orjson.loads(
        audit_record(
            status=400,
            reason="r",
            problems={},
            method="POST",
            path="/p",
            query=[],
            content_type="application/json",
            body=b"r\xe9ponse",
            remote=None,
            received_at_ms=0,
            max_bytes=4096,
        )
    )
    assert record["body"] == "r\\xe9ponse"
    assert "truncated" not in record


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.25) is False  # half a token
    assert bucket.take(0.5) is True
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


QUERY_PIECES = (
    *("a", "b", "=", "&", "+", ";", "%", "%2B", "%3D", "%26", "%zz", "%4", "%00"),
    *("%C3%A9", "%E9", "%F0%9F%91%8D", "%EF%BF%BD"),
)


@given(
    st.lists(
        st.sampled_from(QUERY_PIECES),
        max_size=12,
    )
)
def test_yarl_decodes_like_parse_form_when_it_needs_no_replacement(parts: list[str]) -> None:
    # The ingress trusts yarl's (cached, fast) query unless it holds U+FFFD.
    query = "".join(parts)
    by_yarl = list(URL.build(path="/x", query_string=query, encoded=True).query.items())
    if not any("\ufffd" in k or "\ufffd" in v for k, v in by_yarl):
        assert by_yarl == parse_form(query.encode())[0]
