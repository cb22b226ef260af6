"""The hostile requests: each generator takes a seeded Random and returns one Case."""

from __future__ import annotations

import functools
import gzip
import json
import random
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sms_replies.ingest.app import CALLBACK_PATH

TOKEN = "fuzz-token-0123456789"
TARGET = f"{CALLBACK_PATH}?token={TOKEN}"
READ_TIMEOUT = 5.0  # a request with no answer by then counts as "timeout"
MAX_ANSWER = 1 << 20

VALID_LONG = {
    "msisdn": "33612345678",
    "to": "33756781234",
    "messageId": "0A0000001234",
    "text": "Oui merci",
    "type": "text",
    "keyword": "OUI",
    "message-timestamp": "2024-03-10 09:51:46",
}
VALID_PART = {**VALID_LONG, "concat": "true", "concat-ref": "7", "concat-total": "3"}
VALID_SHORT = {"type": "response", "phone_number": "+33612345671", "text": "Oui", "message_id": 1}

HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "%00",
    "%",
    "%zz",
    "%ff%fe",
    "\ufeff12",
    "\u202eevil",
    "e\u0301\u0301\u0301",
    "\uff11\uff12\uff13",  # fullwidth digits
    "😀" * 3,
    "\U0010ffff",
    "-1",
    "0",
    "65536",
    "256",
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "9" * 400,
    "-0",
    "0x10",
    "1_000",
    " 12 ",
    "true",
    "null",
    "[]",
    "{}",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "${jndi:ldap://x/a}",
    "%s%s%n",
    "\r\nSet-Cookie: x=y",
    "2024-13-45 99:99:99",
    "+33612345678" * 5,
    "&sig=abc&token=x",
]
HOSTILE_JSON: list[Any] = [
    -1,
    0,
    2**70,
    -(2**70),
    1e308,
    -1e308,
    0.5,
    True,
    False,
    None,
    [],
    {},
    [1, 2, 3],
    {"a": {"b": {"c": "d"}}},
    list(range(500)),
]
CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=fuzzboundary",
    "text/plain",
    "application/xml",
    "application/octet-stream",
    "application/json; charset=latin-1",
    "application/x-www-form-urlencoded; charset=bogus",
    "application/x-www-form-urlencoded; charset=utf-16",
    "multipart/form-data",
    "multipart/form-data; boundary=" + "b" * 200,
    "APPLICATION/JSON",
    "application/json\x00",
    ";;;",
    "",
    "*/*",
    "image/png",
]
METHODS = ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "HEAD", "FOO", "get", "CONNECT"]


@dataclass(frozen=True, slots=True)
class Case:
    kind: str
    data: bytes
    mode: str = "normal"  # normal | truncated (half-close) | stall (wait) | slow (dribble)


def request(
    method: str = "POST",
    target: str = TARGET,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    content_length: bool = True,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: fuzz", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if content_length and (body or method == "POST"):
        lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8", "surrogateescape") + body


# -- generators: each takes a seeded Random and returns one Case -------------------


def _hostile_value(rng: random.Random, json_ok: bool) -> Any:
    roll = rng.random()
    if json_ok and roll < 0.25:
        return rng.choice(HOSTILE_JSON)
    if roll < 0.35:
        return "x" * rng.choice([101, 2001, 5000, 20_000])
    if roll < 0.45:
        return "".join(
            chr(rng.choice([rng.randrange(0x20, 0xD800), rng.randrange(0xE000, 0x110000)]))
            for _ in range(rng.randrange(1, 40))
        )
    return rng.choice(HOSTILE_STRINGS)


def _mutated_params(rng: random.Random, json_ok: bool) -> list[tuple[str, Any]]:
    shapes: list[dict[str, Any]] = [VALID_LONG, VALID_PART, VALID_SHORT]
    base = dict(rng.choice(shapes))
    if "concat" in base:
        base["concat-part"] = str(rng.choice([1, 2, 3, 4, 0, -1, 256, 999]))
    items = list(base.items())
    for _ in range(rng.randrange(1, 4)):
        roll = rng.random()
        if roll < 0.2 and items:
            items.pop(rng.randrange(len(items)))
        elif roll < 0.35 and items:
            items.append(rng.choice(items))  # duplicated key
        elif roll < 0.45:
            items.append((rng.choice(["sig", "timestamp", "nonce", "", "a" * 300, "\x00"]), "1"))
        elif items:
            index = rng.randrange(len(items))
            items[index] = (items[index][0], _hostile_value(rng, json_ok))
    return items


def _encode_form(items: list[tuple[str, Any]], rng: random.Random) -> bytes:
    parts = []
    for key, value in items:
        text = value if isinstance(value, str) else json.dumps(value)
        if rng.random() < 0.1:  # raw, not percent-encoded: whatever the bytes are
            parts.append(f"{key}={text}".encode("utf-8", "surrogatepass"))
        else:
            parts.append(
                (
                    urllib.parse.quote(key, safe="") + "=" + urllib.parse.quote(text, safe="")
                ).encode()
            )
    return b"&".join(parts)


def dumps(value: Any) -> bytes:
    """JSON as a sloppy client writes it: big ints, Infinity, lone surrogates and all."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _encode_json(items: list[tuple[str, Any]], rng: random.Random) -> bytes:
    if rng.random() < 0.2:  # keep duplicated keys: a dict cannot
        return b"{" + b",".join(dumps(k) + b":" + dumps(v) for k, v in items) + b"}"
    return dumps(dict(items))


def _encode_multipart(items: list[tuple[str, Any]], boundary: str = "fuzzboundary") -> bytes:
    out = []
    for key, value in items:
        text = value if isinstance(value, str) else json.dumps(value)
        part = f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{text}\r\n'
        out.append(part.encode("utf-8", "surrogatepass"))
    return b"".join(out) + f"--{boundary}--\r\n".encode()


def case_mutated_callback(rng: random.Random) -> Case:
    shape = rng.choice(["get", "form", "json", "multipart"])
    items = _mutated_params(rng, json_ok=shape == "json")
    if shape == "get":
        return Case(
            "mutated-get", request("GET", f"{TARGET}&{_encode_form(items, rng).decode('latin-1')}")
        )
    if shape == "form":
        body = _encode_form(items, rng)
        return Case(
            "mutated-form", request(headers=[("Content-Type", CONTENT_TYPES[1])], body=body)
        )
    if shape == "json":
        body = _encode_json(items, rng)
        return Case(
            "mutated-json", request(headers=[("Content-Type", "application/json")], body=body)
        )
    body = _encode_multipart(items)
    return Case(
        "mutated-multipart", request(headers=[("Content-Type", CONTENT_TYPES[2])], body=body)
    )


def case_random_body(rng: random.Random) -> Case:
    body = rng.randbytes(rng.choice([0, 1, 16, 300, 4000]))
    return Case(
        "random-bytes", request(headers=[("Content-Type", rng.choice(CONTENT_TYPES))], body=body)
    )


def case_wrong_content_type(rng: random.Random) -> Case:
    ctype = rng.choice([*CONTENT_TYPES[3:], "x" * 5000, "multipart/mixed; boundary=a"])
    return Case("content-type", request(headers=[("Content-Type", ctype)], body=dumps(VALID_LONG)))


def case_huge(rng: random.Random) -> Case:
    field = rng.choice(["text", "messageId", "msisdn", "to", "keyword", "zzz"])
    size = rng.choice([2001, 10_000, 60_000, 70_000, 200_000])
    body = dumps({**VALID_LONG, field: "é" * (size // 2)})
    return Case("huge-field", request(headers=[("Content-Type", "application/json")], body=body))


def case_deep_json(rng: random.Random) -> Case:
    depth = rng.choice([10, 100, 1000, 1025, 5000, 30_000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    nested = opener * depth + b"1" + closer * depth
    body = b'{"msisdn":"33612345678","to":"33756781234","messageId":"m","text":' + nested + b"}"
    if rng.random() < 0.5:
        body = nested
    return Case("deep-json", request(headers=[("Content-Type", "application/json")], body=body))


def case_non_utf8(rng: random.Random) -> Case:
    junk = bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(1, 50)))
    where = rng.choice(["form", "json", "query", "header"])
    if where == "form":
        body = b"msisdn=33612345678&to=33756781234&messageId=m&text=" + junk
        return Case("non-utf8", request(headers=[("Content-Type", CONTENT_TYPES[1])], body=body))
    if where == "json":
        body = b'{"msisdn":"33612345678","to":"33756781234","messageId":"m","text":"' + junk + b'"}'
        return Case("non-utf8", request(headers=[("Content-Type", "application/json")], body=body))
    if where == "query":
        target = TARGET.encode() + b"&msisdn=33612345678&to=33756781234&messageId=m&text=" + junk
        return Case(
            "non-utf8", b"GET " + target + b" HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n"
        )
    return Case(
        "non-utf8",
        b"GET "
        + TARGET.encode()
        + b" HTTP/1.1\r\nHost: f\r\nX-J: "
        + junk
        + b"\r\nConnection: close\r\n\r\n",
    )


def case_bad_percent(rng: random.Random) -> Case:
    value = rng.choice(
        ["%", "%z", "%zz", "%ff", "%ED%A0%80", "%00", "%%%", "%C0%AF", "%F4%90%80%80", "%e2%82"]
    )
    key = rng.choice(["text", "msisdn", "messageId", "%", "%zz", "to"])
    query = f"msisdn=33612345678&to=33756781234&messageId=m1&{key}={value}"
    if rng.random() < 0.5:
        return Case("bad-percent", request("GET", f"{TARGET}&{query}"))
    return Case(
        "bad-percent", request(headers=[("Content-Type", CONTENT_TYPES[1])], body=query.encode())
    )


def case_numbers(rng: random.Random) -> Case:
    values: list[Any] = [
        -1,
        0,
        1,
        255,
        256,
        65535,
        65536,
        2**63,
        2**64,
        -(2**63),
        1e400,
        1.5,
        "1e3",
        "+1",
        "\u0663",
        "\uff11",
    ]
    fields = {
        "concat": "true",
        "concat-ref": rng.choice(values),
        "concat-total": rng.choice(values),
        "concat-part": rng.choice(values),
    }
    body = dumps({**VALID_LONG, **fields})  # 1e400 is written Infinity: not JSON
    if rng.random() < 0.3:
        body = body[:-1] + b',"concat-total":1e400}'  # a duplicated key, out of range
    return Case("numbers", request(headers=[("Content-Type", "application/json")], body=body))


def case_too_many(rng: random.Random) -> Case:
    count = rng.choice([51, 60, 500, 5000])
    pairs = "&".join(f"k{i}={i}" for i in range(count))
    if rng.random() < 0.5:
        return Case("too-many-params", request("GET", f"{TARGET}&{pairs}"))
    return Case(
        "too-many-params",
        request(headers=[("Content-Type", CONTENT_TYPES[1])], body=pairs.encode()),
    )


def case_long_query(rng: random.Random) -> Case:
    size = rng.choice([8200, 9000, 20_000, 70_000])
    return Case("long-query", request("GET", f"{TARGET}&text={'a' * size}"))


def case_header_abuse(rng: random.Random) -> Case:
    json = ("Content-Type", "application/json")
    body = dumps(VALID_LONG)
    choice = rng.randrange(16)
    if choice == 0:
        return Case("headers", request(headers=[json, ("X-Long", "a" * 9000)], body=body))
    if choice == 1:
        return Case(
            "headers", request(headers=[json] + [(f"X-{i}", "v") for i in range(200)], body=body)
        )
    if choice == 2:
        return Case("headers", request(headers=[json, ("Content-Length", "5")], body=body))
    if choice == 3:
        length = rng.choice(["-5", "abc", "99999999999999999999999", "1 2", "0x10", ""])
        return Case(
            "headers",
            request(headers=[json, ("Content-Length", length)], body=body, content_length=False),
        )
    if choice == 4:
        return Case(
            "headers",
            request(
                headers=[json, ("Transfer-Encoding", "chunked")], body=b"5\r\nhello\r\n0\r\n\r\n"
            ),
        )
    if choice == 5:
        chunked = rng.choice(
            [b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhel", b"ffffffffffffffffff\r\n", b"-1\r\n\r\n"]
        )
        return Case(
            "headers",
            request(
                headers=[json, ("Transfer-Encoding", "chunked")], body=chunked, content_length=False
            ),
        )
    if choice == 6:
        te = rng.choice(["gzip, chunked", "chunked, chunked", "identity", "chunkedx", "\tchunked"])
        return Case(
            "headers",
            request(
                headers=[json, ("Transfer-Encoding", te)], body=b"0\r\n\r\n", content_length=False
            ),
        )
    if choice == 7:
        return Case("headers", request(headers=[json, ("X-Bad", "a\x00b")], body=body))
    if choice == 8:
        raw = request(headers=[json], body=body).replace(
            b"Host: fuzz\r\n", b"Host: fuzz\r\n folded\r\n"
        )
        return Case("headers", raw)
    if choice == 9:
        return Case(
            "headers", request(headers=[json, ("Bad Name", "v"), ("Héader", "v")], body=body)
        )
    if choice == 10:  # a compressed bomb: 20 MB of zeros in ~20 KB
        bomb = _gzip_bomb()
        return Case("gzip-bomb", request(headers=[json, ("Content-Encoding", "gzip")], body=bomb))
    if choice == 11:
        return Case(
            "headers",
            request(
                headers=[
                    json,
                    ("Content-Encoding", rng.choice(["gzip", "deflate", "br", "zstd", "x"])),
                ],
                body=body,
            ),
        )
    if choice == 12:
        return Case("headers", request(headers=[json, ("Expect", "100-continue")], body=body))
    if choice == 13:
        return Case(
            "headers",
            request(
                headers=[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "x"),
                ]
            ),
        )
    if choice == 14:
        return Case("headers", request(headers=[json, ("Content-Type", "text/plain")], body=body))
    return Case(
        "headers",
        request(headers=[json, ("Host", "a"), ("Host", "b"), ("Cookie", "c" * 5000)], body=body),
    )


@functools.cache
def _gzip_bomb() -> bytes:
    return gzip.compress(b"\x00" * 20_000_000, compresslevel=9)


def case_method(rng: random.Random) -> Case:
    method = rng.choice(METHODS)
    return Case(
        "method",
        request(method, TARGET, [("Content-Type", "application/json")], dumps(VALID_LONG)),
    )


def case_path(rng: random.Random) -> Case:
    path = rng.choice(
        [
            "/",
            "/callbacks/smspartner/",
            "/callbacks/SMSPARTNER",
            "//callbacks//smspartner",
            "/callbacks/%2e%2e/metrics",
            "/../../etc/passwd",
            "/callbacks/smspartner%00",
            "/" + "a" * 5000,
            "*",
            "http://evil.example/callbacks/smspartner",
            "/callbacks/smspartner#frag",
            "/healthz?" + "x" * 100,
        ]
    )
    return Case("path", request("GET", path))


def case_garbage_line(rng: random.Random) -> Case:
    choice = rng.randrange(6)
    if choice == 0:
        # No end of headers in sight: the client gives up and half-closes.
        return Case("garbage", rng.randbytes(rng.randrange(1, 2000)), mode="truncated")
    if choice == 1:  # a TLS ClientHello on the plain port
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(100)
        return Case("garbage", hello, mode="truncated")
    if choice == 2:
        return Case(
            "garbage",
            b"GET " + TARGET.encode() + b" HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    if choice == 3:
        return Case("garbage", b"GET " + TARGET.encode() + b"\r\n\r\n")  # HTTP/0.9
    if choice == 4:
        return Case("garbage", b"\r\n\r\n\r\n", mode="truncated")
    return Case("garbage", b"GET  HTTP/1.1\r\n\r\n")


def case_truncated(rng: random.Random) -> Case:
    body = dumps(VALID_LONG)
    head = request(
        headers=[("Content-Type", "application/json"), ("Content-Length", str(len(body) + 50))],
        body=b"",
        content_length=False,
    )
    cut = rng.randrange(0, len(body))
    return Case("truncated", head + body[:cut], mode="truncated")


def case_stall(rng: random.Random) -> Case:
    head = request(
        headers=[("Content-Type", CONTENT_TYPES[1]), ("Content-Length", "500")],
        content_length=False,
    )
    return Case("stalled-body", head + b"msisdn=336", mode="stall")


def case_slow(rng: random.Random) -> Case:
    body = dumps(VALID_SHORT)
    return Case(
        "slow-client",
        request(headers=[("Content-Type", "application/json")], body=body),
        mode="slow",
    )


def case_oversize_declared(rng: random.Random) -> Case:
    head = request(
        headers=[("Content-Type", "application/json"), ("Content-Length", "1000000000")],
        content_length=False,
    )
    return Case("oversize-declared", head + b'{"msisdn": "3361', mode="stall")


def case_valid(rng: random.Random) -> Case:
    params = {**VALID_LONG, "messageId": f"fuzz-{rng.getrandbits(48):x}"}
    return Case(
        "valid",
        request(
            headers=[("Content-Type", CONTENT_TYPES[1])],
            body=urllib.parse.urlencode(params).encode(),
        ),
    )


def case_no_token(rng: random.Random) -> Case:
    target = rng.choice(
        [
            CALLBACK_PATH,
            f"{CALLBACK_PATH}?token=",
            f"{CALLBACK_PATH}?token={TOKEN[:-1]}",
            f"{CALLBACK_PATH}?token={TOKEN}x",
            f"{CALLBACK_PATH}?TOKEN={TOKEN}",
        ]
    )
    return Case(
        "token",
        request(
            "GET", target + ("&" if "?" in target else "?") + urllib.parse.urlencode(VALID_LONG)
        ),
    )


# (generator, weight): mostly cheap hostile requests, a few expensive ones.
GENERATORS: list[tuple[Callable[[random.Random], Case], float]] = [
    (case_mutated_callback, 30),
    (case_random_body, 10),
    (case_wrong_content_type, 5),
    (case_huge, 2),
    (case_deep_json, 4),
    (case_non_utf8, 6),
    (case_bad_percent, 6),
    (case_numbers, 6),
    (case_too_many, 3),
    (case_long_query, 2),
    (case_header_abuse, 8),
    (case_method, 4),
    (case_path, 4),
    (case_garbage_line, 4),
    (case_truncated, 2),
    (case_no_token, 3),
    (case_valid, 2),
    (case_slow, 0.3),
    (case_stall, 0.1),
    (case_oversize_declared, 0.1),
]


def cases(count: int, seed: int) -> Iterator[Case]:
    functions = [g for g, _ in GENERATORS]
    weights = [w for _, w in GENERATORS]
    picker = random.Random(seed)
    for index in range(count):
        generator = picker.choices(functions, weights)[0]
        yield generator(random.Random(f"{seed}:{index}"))
