"""The ingress's refusals against a real broker: each one is kept in the rejects topic."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sms_replies.broker.admin import ensure_topics
from sms_replies.ingest.app import CALLBACK_PATH, create_app
from sms_replies.settings import Settings
from tests.integration.conftest import consume

pytestmark = pytest.mark.integration

CALLBACK = {"msisdn": "33612345678", "to": "33756781234", "messageId": "m-1", "text": "Oui"}
SECRET = "provider-signing-secret"
Client = TestClient[web.Request, web.Application]


def sign(params: dict[str, str]) -> dict[str, str]:
    text = "".join(
        f"&{k}={v.replace('&', '_').replace('=', '_')}" for k, v in sorted(params.items())
    )
    return {**params, "sig": hashlib.md5((text + SECRET).encode()).hexdigest()}


@pytest.fixture
async def secured(settings: Settings) -> AsyncIterator[tuple[Client, Settings]]:
    secured = Settings.load(
        **{
            **settings.model_dump(),
            "callback_token": "url-token",
            "signature_secret": SECRET,
            "signature_method": "md5hash",
            "max_body_bytes": 4096,
        }
    )
    await ensure_topics(secured.bootstrap, secured.topics, partitions=1)
    async with TestClient(TestServer(create_app(secured))) as client:
        yield client, secured


async def test_every_refusal_is_audited_and_the_signed_callback_passes(
    secured: tuple[Client, Settings],
) -> None:
    client, settings = secured
    now = str(int(time.time()))
    token = {"token": "url-token"}
    good = sign({**CALLBACK, "timestamp": now, "nonce": "n-1"})
    answers: list[int] = []

    async def status(response: Any) -> None:
        assert response.content_type == "application/json"
        answers.append(response.status)

    await status(await client.get(CALLBACK_PATH, params={**good, **token}))  # 200
    await status(await client.get(CALLBACK_PATH, params={**good, "text": "Non", **token}))  # 401
    stale = sign({**CALLBACK, "timestamp": str(int(now) - 3600)})
    await status(await client.post(CALLBACK_PATH, params=token, data=stale))  # 401
    await status(await client.get(CALLBACK_PATH, params=good))  # 401: no token
    await status(
        await client.post(
            CALLBACK_PATH,
            params=token,
            data=b"x" * 10_000,
            headers={"Content-Type": "application/json"},
        )
    )  # 413
    await status(await client.get(CALLBACK_PATH, params={**token, "q": "x" * 9000}))  # 414
    await status(await client.get("/unknown", params=token))  # 404
    await status(await client.delete(CALLBACK_PATH, params=token))  # 405
    assert answers == [200, 401, 401, 401, 413, 414, 404, 405]

    audits = [
        orjson.loads(v) for v in await consume(settings.bootstrap, settings.topics.rejects, 7)
    ]
    assert [(a["status"], a["reason"]) for a in audits] == [
        (401, "wrong signature"),
        (401, "timestamp outside the accepted window"),
        (401, "missing or wrong token"),
        (413, "body too large"),
        (414, "query string too long"),
        (404, "not found"),
        (405, "method not allowed"),
    ]
    assert all("token" not in a["query"] for a in audits)
    assert audits[0]["query"]["sig"] == good["sig"]  # kept: it proves what was sent
    assert audits[3]["body"] is None  # an oversized body is not kept (nor read)
    [accepted] = await consume(settings.bootstrap, settings.topics.raw, 1)
    assert orjson.loads(accepted)["provider_message_id"] == "m-1"


async def test_token_comparison_still_constant_time_when_signature_is_off(
    settings: Settings,
) -> None:
    # Only the token: a signature is not asked for when no secret is configured.
    only_token = Settings.load(**{**settings.model_dump(), "callback_token": "url-token"})
    await ensure_topics(only_token.bootstrap, only_token.topics, partitions=1)
    async with TestClient(TestServer(create_app(only_token))) as client:
        ok = await client.get(CALLBACK_PATH, params={**CALLBACK, "token": "url-token"})
        assert ok.status == 200
        signature = hmac.new(b"k", b"m", hashlib.sha256).hexdigest()
        ignored = {**CALLBACK, "token": "url-token", "sig": signature}
        assert (await client.get(CALLBACK_PATH, params=ignored)).status == 200
