"""The ingress's defences, over real HTTP with an in-memory publisher (no broker).

Every refusal must be a small JSON answer, counted, and kept for audit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sms_replies import metrics
from sms_replies.ingest.app import CALLBACK_PATH, create_app
from sms_replies.ingest.publisher import Publisher
from sms_replies.records import RawPart, Topics
from sms_replies.settings import Settings

CALLBACK = {"msisdn": "33612345678", "to": "33756781234", "messageId": "m-1", "text": "Oui"}
Client = TestClient[web.Request, web.Application]


class MemoryPublisher(Publisher):
    def __init__(self) -> None:
        super().__init__("unused:9092", Topics.with_prefix("unit"), timeout=1)
        self.parts: list[RawPart] = []
        self.rejects: list[dict[str, Any]] = []
        self.fail_with: Exception | None = None

    async def connect(self) -> Any:
        return None

    async def publish(self, part: RawPart) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.parts.append(part)

    async def publish_reject(self, record: bytes) -> None:
        self.rejects.append(orjson.loads(record))

    async def stop(self) -> None:
        return None


def make_settings(**overrides: Any) -> Settings:
    return Settings.load(kafka_bootstrap="unused:9092", **overrides)


@pytest.fixture
def publisher() -> MemoryPublisher:
    return MemoryPublisher()


@pytest.fixture
async def serve(
    publisher: MemoryPublisher,
) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []

    async def start(**overrides: Any) -> Client:
        client: Client = TestClient(TestServer(create_app(make_settings(**overrides), publisher)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def assert_json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status
    assert response.content_type == "application/json"
    text = await response.text()
    assert "Traceback" not in text
    body: dict[str, Any] = orjson.loads(text)
    assert "error" in body
    return body


async def raw_request(client: Client, data: bytes, *, then: bytes = b"") -> bytes:
    """Send raw bytes, keep the socket open, return what the server answered."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in answer.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            return answer + await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()


# -- token -------------------------------------------------------------------


async def test_token_is_compared_in_constant_time_even_when_missing(
    serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, publisher: MemoryPublisher
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module ingress.app uses
    client = await serve(callback_token="s3cret")
    assert (await client.get(CALLBACK_PATH, params=CALLBACK)).status == 401
    assert (await client.get(CALLBACK_PATH, params={**CALLBACK, "token": "s3cre"})).status == 401
    assert (await client.get(CALLBACK_PATH, params={**CALLBACK, "token": "s3cret"})).status == 200
    assert calls == [(b"", b"s3cret"), (b"s3cre", b"s3cret"), (b"s3cret", b"s3cret")]
    assert [r["status"] for r in publisher.rejects] == [401, 401]
    assert all("token" not in r["query"] for r in publisher.rejects)


# -- signature ---------------------------------------------------------------


def signed(params: dict[str, str], secret: str = "sig-secret") -> dict[str, str]:
    """Sign like the provider would, written out independently of the ingress code."""
    text = "".join(
        f"&{k}={v.replace('&', '_').replace('=', '_')}" for k, v in sorted(params.items())
    )
    sig = hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    return {**params, "sig": sig}


async def test_signed_callback_is_accepted_by_get_form_and_json(
    serve: Callable[..., Any], publisher: MemoryPublisher
) -> None:
    client = await serve(signature_secret="sig-secret", signature_method="sha256")
    params = signed({**CALLBACK, "text": "a=b&c", "timestamp": str(int(time.time()))})
    assert (await client.get(CALLBACK_PATH, params=params)).status == 200
    assert (await client.post(CALLBACK_PATH, data=params)).status == 200
    assert (await client.post(CALLBACK_PATH, json=params)).status == 200
    # Our token may ride along in the query: it is not part of the signature.
    assert (await client.get(CALLBACK_PATH, params={**params, "token": "x"})).status == 200
    assert [p.text for p in publisher.parts] == ["a=b&c"] * 4


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda p: {k: v for k, v in p.items() if k != "sig"}, "missing signature"),
        (lambda p: {**p, "text": "Non"}, "wrong signature"),
        (lambda p: {**p, "sig": p["sig"][:-1]}, "wrong signature"),
    ],
)
async def test_bad_signature_gets_401_and_is_audited(
    serve: Callable[..., Any],
    publisher: MemoryPublisher,
    tamper: Callable[[dict[str, str]], dict[str, str]],
    reason: str,
) -> None:
    client = await serve(signature_secret="sig-secret", signature_method="sha256")
    params = tamper(signed({**CALLBACK, "timestamp": str(int(time.time()))}))
    body = await assert_json_error(await client.post(CALLBACK_PATH, data=params), 401)
    assert body["error"] == reason
    assert not publisher.parts
    [audit] = publisher.rejects
    assert audit["status"] == 401
    assert audit["reason"] == reason


async def test_replayed_signed_callback_gets_401(
    serve: Callable[..., Any], publisher: MemoryPublisher
) -> None:
    client = await serve(signature_secret="sig-secret", signature_max_skew=300)
    old = signed({**CALLBACK, "timestamp": str(int(time.time()) - 301)})
    body = await assert_json_error(await client.get(CALLBACK_PATH, params=old), 401)
    assert body["error"] == "timestamp outside the accepted window"
    unsigned_time = signed(dict(CALLBACK))
    body = await assert_json_error(await client.get(CALLBACK_PATH, params=unsigned_time), 401)
    assert body["error"] == "missing timestamp"
    assert [r["status"] for r in publisher.rejects] == [401, 401]


# -- limits ------------------------------------------------------------------


async def test_long_query_gets_414_and_too_many_params_400(
    serve: Callable[..., Any], publisher: MemoryPublisher
) -> None:
    client = await serve(max_query_bytes=1024, max_params=10)
    long_query = {**CALLBACK, "pad": "x" * 2000}
    await assert_json_error(await client.get(CALLBACK_PATH, params=long_query), 414)
    many = {**CALLBACK, **{f"k{i}": "v" for i in range(7)}}
    body = await assert_json_error(await client.get(CALLBACK_PATH, params=many), 400)
    assert body["problems"] == {"callback": "too many parameters"}
    # Query and body together count.
    body = await assert_json_error(
        await client.post(CALLBACK_PATH, params={"a": "1", "b": "2"}, data=many), 400
    )
    assert [r["status"] for r in publisher.rejects] == [414, 400, 400]


async def test_default_query_limit_is_reachable_and_answered_414(
    serve: Callable[..., Any],
) -> None:
    client = await serve()  # 8 KiB query: aiohttp's request-line limit is raised above it
    await assert_json_error(await client.get(CALLBACK_PATH, params={"x": "y" * 8300}), 414)


async def test_duplicated_parameters_are_refused(serve: Callable[..., Any]) -> None:
    client = await serve()
    query = "msisdn=33612345678&to=33756781234&messageId=m-1&msisdn=33700000000"
    body = await assert_json_error(await client.get(f"{CALLBACK_PATH}?{query}"), 400)
    assert body["problems"] == {"msisdn": "parameter given more than once"}
    # Across query and body as well.
    response = await client.post(CALLBACK_PATH, params={"text": "a"}, data=CALLBACK | {"text": "b"})
    assert (await assert_json_error(response, 400))["problems"] == {
        "text": "parameter given more than once"
    }


async def test_declared_oversized_body_is_refused_before_reading_it(
    serve: Callable[..., Any], publisher: MemoryPublisher
) -> None:
    client = await serve()
    head = (
        f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = await raw_request(client, head + b'{"msisdn": ')  # the rest never comes
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"Connection: close" in answer
    assert time.monotonic() - started < 2
    assert publisher.rejects[-1]["status"] == 413
    assert publisher.rejects[-1]["body"] is None


async def test_chunked_oversized_body_gets_413(serve: Callable[..., Any]) -> None:
    client = await serve(max_body_bytes=1000)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"a" * 100

    response = await client.post(
        CALLBACK_PATH, data=chunks(), headers={"Content-Type": "application/json"}
    )
    await assert_json_error(response, 413)


async def test_slow_body_gets_408(serve: Callable[..., Any], publisher: MemoryPublisher) -> None:
    client = await serve(body_timeout=0.3)
    head = (
        f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    answer = await raw_request(client, head + b"msisdn=336")
    assert answer.startswith(b"HTTP/1.1 408")
    assert publisher.rejects[-1]["status"] == 408


@pytest.mark.parametrize(
    ("headers", "body", "status", "problem"),
    [
        ({"Content-Type": "text/plain"}, b"msisdn=1", 415, None),
        ({"Content-Type": "application/json"}, b"[" * 5000, 400, "not valid JSON"),
        ({"Content-Type": "application/json"}, b'{"a": "\xff"}', 400, "not valid JSON"),
        (
            {"Content-Type": "application/x-www-form-urlencoded; charset=bogus"},
            b"msisdn=1",
            400,
            "unknown charset",
        ),
        (
            # A declared charset is applied strictly (undeclared: UTF-8, else Windows-1252).
            {"Content-Type": "application/x-www-form-urlencoded; charset=ascii"},
            b"msisdn=\xff\xfe",
            400,
            "not valid ascii",
        ),
        (
            {"Content-Type": "multipart/form-data; boundary=zz"},
            b"--zz\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--yy--",
            400,
            "malformed body",
        ),
        (
            {"Content-Type": "multipart/form-data"},  # no boundary
            b"--zz--",
            400,
            "malformed body",
        ),
    ],
)
async def test_malformed_bodies_get_4xx_never_500(
    serve: Callable[..., Any],
    publisher: MemoryPublisher,
    headers: dict[str, str],
    body: bytes,
    status: int,
    problem: str | None,
) -> None:
    client = await serve()
    answer = await assert_json_error(
        await client.post(CALLBACK_PATH, data=body, headers=headers), status
    )
    if problem is not None:
        assert answer["problems"] == {"body": problem}
    assert publisher.rejects[-1]["status"] == status


async def test_ids_with_control_characters_are_refused(serve: Callable[..., Any]) -> None:
    client = await serve()
    response = await client.post(CALLBACK_PATH, json={**CALLBACK, "messageId": "m\x00-1"})
    body = await assert_json_error(response, 400)
    assert "messageId" in body["problems"]


# -- error pages -------------------------------------------------------------


async def test_router_errors_are_json_and_audited(
    serve: Callable[..., Any], publisher: MemoryPublisher
) -> None:
    client = await serve()
    body = await assert_json_error(await client.get("/nope?token=secret"), 404)
    assert body == {"error": "not found"}
    response = await client.put(CALLBACK_PATH, data=b"x")
    assert (await assert_json_error(response, 405)) == {"error": "method not allowed"}
    assert set(response.headers["Allow"].split(",")) == {"GET", "POST"}
    assert [(r["status"], r["path"]) for r in publisher.rejects] == [
        (404, "/nope"),
        (405, CALLBACK_PATH),
    ]
    assert publisher.rejects[0]["query"] == {}


@pytest.mark.parametrize(
    "target", [b"*", b"/a%0Ab", b"/x/y/z", b"//", CALLBACK_PATH.encode() + b"/extra"]
)
async def test_any_request_target_is_a_json_404_kept_for_audit(
    serve: Callable[..., Any], publisher: MemoryPublisher, target: bytes
) -> None:
    # The catch-all overrides aiohttp's private PlainResource._match (a public
    # "/{path:...}" route never sees "*"): this fails if aiohttp changes it.
    client = await serve()
    answer = await raw_request(client, b"OPTIONS " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 ")
    assert b"Content-Type: application/json" in head
    assert orjson.loads(body) == {"error": "not found"}
    assert [r["status"] for r in publisher.rejects] == [404]


async def test_unexpected_exception_is_a_plain_500(
    serve: Callable[..., Any], publisher: MemoryPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    publisher.fail_with = RuntimeError("secret internals at /srv/app.py line 42")
    client = await serve()
    response = await client.get(CALLBACK_PATH, params=CALLBACK)
    assert (await assert_json_error(response, 500)) == {"error": "internal error"}
    assert "secret internals" not in await response.text()
    assert "secret internals" in caplog.text  # the operator sees it, the caller does not
    assert publisher.rejects[-1]["status"] == 500


async def test_rejects_are_counted_by_status(serve: Callable[..., Any]) -> None:
    client = await serve()
    before = metrics.CALLBACKS.labels("rejected_404")._value.get()
    await client.get("/missing")
    assert metrics.CALLBACKS.labels("rejected_404")._value.get() == before + 1


# -- edge cases (issue 11 item 3) ----------------------------------------------


async def test_no_library_versions_in_the_server_header(serve: Callable[..., Any]) -> None:
    client = await serve()
    answers = [
        await client.get(CALLBACK_PATH, params=CALLBACK),
        await client.get("/nope"),
        await client.get("/healthz"),
    ]
    assert [a.headers["Server"] for a in answers] == ["sms-replies"] * 3
    # The HTTP parser's own 400 (no handler, no middleware runs) says no more.
    garbage = await raw_request(client, b"GET /x\x01 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400") or garbage.startswith(b"HTTP/1.0 400")
    assert b"\r\nServer: sms-replies\r\n" in garbage
    assert b"aiohttp" not in garbage
    assert b"Python/" not in garbage


@pytest.mark.parametrize(
    ("encoded", "text"),
    [
        ("r%E9ponse", "réponse"),  # ISO-8859-1
        ("r%C3%A9ponse", "réponse"),  # UTF-8, as SMS Partner and Vonage send
        ("c%92est+%80", "c\u2019est €"),  # Windows-1252 (WHATWG's "latin1")
        ("%F0%9F%91%8D", "\U0001f44d"),
    ],
)
async def test_percent_encoded_text_is_decoded_as_meant_never_u_fffd(
    serve: Callable[..., Any], publisher: MemoryPublisher, encoded: str, text: str
) -> None:
    client = await serve()
    query = "msisdn=33612345678&to=33756781234&messageId=m-1&text=" + encoded
    assert (await client.get(f"{CALLBACK_PATH}?{query}")).status == 200
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await client.post(CALLBACK_PATH, data=query.encode(), headers=form)).status == 200
    # Raw (unencoded) Latin-1 bytes in a form body too.
    raw = query.replace("r%E9ponse", "r\xe9ponse").encode("latin-1")
    assert (await client.post(CALLBACK_PATH, data=raw, headers=form)).status == 200
    assert [p.text for p in publisher.parts] == [text] * 3
    assert not any("\ufffd" in p.text for p in publisher.parts)


async def test_non_utf8_values_are_counted(serve: Callable[..., Any]) -> None:
    client = await serve()
    before = metrics.INGRESS_NON_UTF8_VALUES._value.get()
    query = "msisdn=33612345678&to=33756781234&messageId=m-1&text=r%E9ponse&keyword=R%C9PONSE"
    assert (await client.get(f"{CALLBACK_PATH}?{query}")).status == 200
    assert metrics.INGRESS_NON_UTF8_VALUES._value.get() == before + 2


async def test_json_concat_true_is_accepted_like_the_string(
    serve: Callable[..., Any], publisher: MemoryPublisher
) -> None:
    client = await serve()
    part = {**CALLBACK, "concat-ref": 171, "concat-total": 2, "concat-part": 1}
    assert (await client.post(CALLBACK_PATH, json={**part, "concat": True})).status == 200
    assert (await client.post(CALLBACK_PATH, json={**part, "concat": "true"})).status == 200
    first, second = publisher.parts
    assert first == dataclasses.replace(second, received_at_ms=first.received_at_ms)
    assert first.concat is not None
    assert (first.concat.total, first.concat.part) == (2, 1)
    # A boolean true without the numbers is refused like the string.
    body = await assert_json_error(
        await client.post(CALLBACK_PATH, json={**CALLBACK, "concat": True}), 422
    )
    assert "concat" in body["problems"]


async def test_signed_part_repacked_into_one_key_is_refused(
    serve: Callable[..., Any], publisher: MemoryPublisher
) -> None:
    client = await serve(signature_secret="sig-secret", signature_method="sha256")
    part = {
        **CALLBACK,
        "concat": "true",
        "concat-part": "2",
        "concat-ref": "171",
        "concat-total": "2",
        "timestamp": str(int(time.time())),
    }
    captured = signed(part)
    assert (await client.post(CALLBACK_PATH, data=captured)).status == 200
    # The same signed string, but the concat fields hidden in one unknown key:
    # it would be stored as a second, single-part reply.
    repacked = {k: v for k, v in captured.items() if not k.startswith("concat")}
    repacked["concat=true&concat-part=2&concat-ref=171&concat-total"] = "2"
    body = await assert_json_error(await client.post(CALLBACK_PATH, data=repacked), 401)
    assert body["error"] == "parameter name with '&' or '=' cannot be signed"
    assert len(publisher.parts) == 1


async def test_audit_record_of_a_large_refused_body_is_cut(
    serve: Callable[..., Any], publisher: MemoryPublisher
) -> None:
    client = await serve(audit_max_bytes=4096)
    body = b'{"msisdn": "' + b"\x01" * 60_000 + b'"'  # invalid JSON, read whole (60 KiB)
    query = {"note": "x" * 7000}
    response = await client.post(
        CALLBACK_PATH, data=body, params=query, headers={"Content-Type": "application/json"}
    )
    await assert_json_error(response, 400)
    [audit] = publisher.rejects
    assert len(orjson.dumps(audit["body"])) <= 4096
    assert audit["body"].startswith('{"msisdn": "\x01')
    assert len(orjson.dumps(audit["query"])) <= 4096 + 16
    assert audit["query"]["note"].startswith("xxx")
    assert audit["truncated"] == ["body", "query"]
    assert len(orjson.dumps(audit)) < 2 * 4096 + 2048


async def test_unknown_path_audits_are_rate_limited_but_counted(
    serve: Callable[..., Any], publisher: MemoryPublisher
) -> None:
    client = await serve(audit_unknown_path_rate=0.001, audit_unknown_path_burst=5)
    answered = metrics.CALLBACKS.labels("rejected_404")._value.get()
    dropped = metrics.REJECTS_NOT_AUDITED.labels("rate_limited")._value.get()
    for n in range(30):
        await assert_json_error(await client.get(f"/probe-{n}"), 404)
    # Refusals on the callback path itself are always audited.
    await assert_json_error(await client.get(CALLBACK_PATH, params={"x": "1"}), 400)
    assert [r["path"] for r in publisher.rejects] == [
        *(f"/probe-{n}" for n in range(5)),
        CALLBACK_PATH,
    ]
    assert metrics.CALLBACKS.labels("rejected_404")._value.get() == answered + 30
    assert metrics.REJECTS_NOT_AUDITED.labels("rate_limited")._value.get() == dropped + 25
