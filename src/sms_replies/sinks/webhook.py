"""Webhook sink: POSTs batches of replies, signed, to the operator's HTTP endpoint.

Each request carries up to ``MAX_BATCH`` replies as JSON, an
``X-SMS-Replies-Signature`` (HMAC-SHA256 of the exact body with ``SECRET``) and
an ``Idempotency-Key`` derived from its reply_ids; every reply in the body
carries its ``reply_id``, on which the receiver deduplicates (``docs/webhook.md``).

Retries happen at two levels, on purpose. Inside ``write``, a timeout, a
connection error, a 5xx or a retriable 4xx (408, 429...) is retried up to
``MAX_ATTEMPTS`` times with exponential backoff, honouring ``Retry-After``
(capped at ``RETRY_AFTER_MAX``): only the sink sees that header, and the retried
request is byte-identical (same body, signature and key). When those attempts
run out, ``write`` raises ``SinkWriteError(retriable=True)`` and the runner
retries the batch forever without committing, so an endpoint down for hours
loses nothing; the rebuilt request keeps its key and reply_ids. Any other 4xx
says the receiver refuses these rows: ``retriable=False``, and the runner
splits the batch until it dead-letters the refused replies alone.

Logs name the endpoint by its origin only (the URL's path or query may hold a
token) and never show the secret, the body or the receiver's answer.

Settings (``SMS_REPLIES_WEBHOOK_*``): ``URL`` and ``SECRET`` (required),
``TIMEOUT``, ``MAX_BATCH``, ``MAX_ATTEMPTS``, ``BACKOFF_INITIAL``,
``BACKOFF_MAX``, ``RETRY_AFTER_MAX``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Self

import aiohttp
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from sms_replies import __version__
from sms_replies.errors import ConfigError, SinkWriteError
from sms_replies.records import Reply
from sms_replies.schema import ROW_ERRORS, unique_by_id
from sms_replies.sinks.base import Sink, SinkContext
from sms_replies.sinks.webhook_protocol import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    encode_body,
    idempotency_key,
    is_retriable_status,
    retry_after_seconds,
    sign,
)

log = logging.getLogger(__name__)

USER_AGENT = f"sms-replies/{__version__} (webhook sink)"


class WebhookSinkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMS_REPLIES_WEBHOOK_", extra="ignore")

    url: SecretStr | None = Field(
        None, description="http(s) URL the replies are POSTed to (may hold a token: kept secret)."
    )
    secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of the signature (16+ characters)."
    )
    timeout: float = Field(10.0, gt=0, description="Seconds for one request, connect to answer.")
    max_batch: int = Field(500, ge=1, description="Most replies per request.")
    max_attempts: int = Field(5, ge=1, description="Tries of one request per sink write.")
    backoff_initial: float = Field(0.5, gt=0, description="Seconds before the first retry.")
    backoff_max: float = Field(30.0, gt=0, description="Longest wait between two retries.")
    retry_after_max: float = Field(
        120.0, ge=0, description="Longest wait a receiver's Retry-After can ask."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = URL(value.get_secret_value())
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError("must be an absolute http:// or https:// URL")
        return value

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. openssl rand -hex 32)")
        return value


class WebhookSink(Sink):
    """POSTs each batch to one endpoint; the receiver deduplicates by ``reply_id``."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        timeout: float = 10.0,
        max_batch: int = 500,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 120.0,
    ) -> None:
        self.url = URL(url)
        self.origin = str(self.url.origin())  # what logs and errors may show
        self._secret = secret
        self.timeout = timeout
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: SinkContext) -> Self:
        own = WebhookSinkSettings()
        if own.url is None:
            raise ConfigError("the webhook sink needs SMS_REPLIES_WEBHOOK_URL")
        if own.secret is None:
            raise ConfigError("the webhook sink needs SMS_REPLIES_WEBHOOK_SECRET")
        return cls(
            own.url.get_secret_value(),
            own.secret.get_secret_value().encode(),
            timeout=own.timeout,
            max_batch=own.max_batch,
            max_attempts=own.max_attempts,
            backoff_initial=own.backoff_initial,
            backoff_max=own.backoff_max,
            retry_after_max=own.retry_after_max,
        )

    def __repr__(self) -> str:
        return f"WebhookSink({self.origin!r})"

    async def setup(self) -> None:
        """Opens the HTTP session; sends nothing (a receiver has no probe endpoint to call)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def write(self, batch: Sequence[Reply]) -> None:
        replies = unique_by_id(batch)
        for start in range(0, len(replies), self.max_batch):
            await self._deliver(replies[start : start + self.max_batch])

    async def _deliver(self, replies: Sequence[Reply]) -> None:
        """One request, retried here up to max_attempts; then the runner's turn."""
        try:
            body = encode_body(replies, datetime.now(UTC))
        except ROW_ERRORS as exc:  # a mistyped reply built by hand: never sendable
            raise SinkWriteError(
                f"webhook: reply cannot be encoded ({type(exc).__name__}: {exc})", retriable=False
            ) from None
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, self._secret),
            IDEMPOTENCY_HEADER: idempotency_key([reply.reply_id for reply in replies]),
        }
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                status, retry_after = await self._post(body, headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # The exception type only: messages of some carry the whole URL.
                problem = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            else:
                if 200 <= status < 300:
                    return
                if not is_retriable_status(status):
                    raise SinkWriteError(
                        f"webhook {self.origin}: HTTP {status} refused {len(replies)} replies",
                        retriable=False,
                    )
                problem = f"HTTP {status}"
            if attempt >= self.max_attempts:
                raise SinkWriteError(
                    f"webhook {self.origin}: {problem} ({attempt} attempts)", retriable=True
                )
            delay = self._delay(attempt, retry_after)
            log.warning(
                "webhook %s: %s for %d replies (attempt %d of %d); retry in %.1fs",
                self.origin,
                problem,
                len(replies),
                attempt,
                self.max_attempts,
                delay,
            )
            await asyncio.sleep(delay)

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, float | None]:
        """(status, Retry-After seconds) of one POST; redirects are answers, not followed."""
        await self.setup()
        assert self._session is not None
        async with self._session.post(
            self.url, data=body, headers=headers, allow_redirects=False
        ) as response:
            await response.content.readany()  # a chunk at most: the answer is not used
            return response.status, retry_after_seconds(response.headers.get("Retry-After"))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        return float(min(self.backoff_max, self.backoff_initial * 2 ** min(attempt - 1, 30)))
