"""A sink that adds the sender of every STOP reply to SMS Partner's stop list.

It stores nothing itself: for each reply with ``is_stop`` (a short-number
``type: stop`` or a STOP-family text) it calls ``POST <base>/stop-sms/add``
(:mod:`.protocol`), so that SMS Partner refuses later sends to that number
whatever tool sends them. Other replies are passed over.

**Idempotent because the list is a set.** Adding a number already on the list
answers code 3 ("already in the stop list"), counted as success. So a batch
the runner delivers again, a retried request whose first try did land, two
STOPs from one number and a dead-letter replay all leave the list as one add
would. Numbers are deduplicated within a batch; nothing is remembered between
batches on purpose: if the operator took a number off the list by hand and the
person sends STOP again, that STOP must reach the list again.

**Retries at two levels**, as the webhook sink does. Inside ``write``, a
timeout, a connection error, 408/425/429, a 5xx or an unexpected answer is
retried up to ``MAX_ATTEMPTS`` times with exponential backoff, honouring
``Retry-After``; then ``write`` raises ``SinkWriteError(retriable=True)`` and the
runner retries the batch, forever, committing nothing. A wrong or missing API
key (codes 1 and 10, HTTP 401/403) is retriable too, logged as an error: the
operator fixes the key and nothing is lost. A permanent refusal of the number
(code 2 or 9, any other 4xx) is ``retriable=False``: the runner isolates the
reply and dead-letters it with the reason; the rest of the batch is pushed.

**Pseudonymised senders cannot be pushed** (``h:`` + HMAC of the number: the
number is gone at the ingress). With ``SMS_REPLIES_PSEUDONYMIZE_KEY`` set the
sink refuses to start (``ConfigError``, so ``run`` stops before anything runs):
silently pushing nothing would look like compliance and be none. A pseudonym
met anyway (a replay of records pseudonymised under an earlier configuration)
is skipped, counted in ``counts["skipped_pseudonym"]`` and logged.

Logs and errors name the endpoint by its origin and never show the API key or
a number.

Settings (``SMS_REPLIES_SMSPARTNER_*``): ``API_KEY`` (required), ``BASE_URL``,
``TIMEOUT``, ``MAX_ATTEMPTS``, ``BACKOFF_INITIAL``, ``BACKOFF_MAX``,
``RETRY_AFTER_MAX``, ``CONCURRENCY``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import aiohttp
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from sms_replies.sinks import ConfigError, Reply, Sink, SinkContext, SinkWriteError, unique_by_id
from sms_replies_smspartner.protocol import (
    ADD_PATH,
    DEFAULT_BASE_URL,
    Verdict,
    backoff,
    classify,
    is_pseudonym,
    pushable,
    request_body,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

USER_AGENT = "sms-replies-smspartner-stoplist/0.1"


class SmsPartnerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMS_REPLIES_SMSPARTNER_", extra="ignore")

    api_key: SecretStr | None = Field(None, description="SMS Partner API key (required).")
    base_url: str = Field(DEFAULT_BASE_URL, description=f"API base URL (<base>/{ADD_PATH}).")
    timeout: float = Field(10.0, gt=0, description="Seconds for one request, connect to answer.")
    max_attempts: int = Field(5, ge=1, description="Tries of one number per sink write.")
    backoff_initial: float = Field(0.5, gt=0, description="Seconds before the first retry.")
    backoff_max: float = Field(30.0, gt=0, description="Longest wait between two retries.")
    retry_after_max: float = Field(
        120.0, ge=0, description="Longest wait a Retry-After answer can ask."
    )
    concurrency: int = Field(4, ge=1, le=64, description="Numbers pushed at once.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value


class _ProcessPrivacy(BaseSettings):
    """The one process setting the sink must see that ``SinkContext`` does not carry."""

    model_config = SettingsConfigDict(env_prefix="SMS_REPLIES_", extra="ignore")

    pseudonymize_key: SecretStr | None = None


def pseudonymisation_on(context: SinkContext) -> bool:
    """The process's ``Settings`` has the key; a bare context falls back to the environment."""
    if hasattr(context, "pseudonymize_key"):
        return getattr(context, "pseudonymize_key", None) is not None
    return _ProcessPrivacy().pseudonymize_key is not None


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How the push of one number ended in this write."""

    verdict: Verdict | None  # ADDED, ALREADY_LISTED, REJECTED; None: gave up (retriable)
    detail: str
    attempts: int


class SmsPartnerStopListSink(Sink):
    """Adds the sender of each STOP reply to SMS Partner's stop list; stores nothing."""

    name = "smspartner-stoplist"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 120.0,
        concurrency: int = 4,
    ) -> None:
        self.url = URL(base_url.rstrip("/") + "/" + ADD_PATH)
        self.origin = str(self.url.origin())
        self._api_key = api_key
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.concurrency = concurrency
        #: Since start: added, already_listed, skipped_pseudonym, rejected, retried.
        self.counts: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: SinkContext) -> Self:
        if pseudonymisation_on(settings):
            raise ConfigError(
                "the smspartner-stoplist sink cannot push pseudonymised senders: "
                "SMS_REPLIES_PSEUDONYMIZE_KEY is set, so no reply holds a number "
                "(unset the key, or drop the sink)"
            )
        own = SmsPartnerSettings()
        if own.api_key is None or not own.api_key.get_secret_value():
            raise ConfigError("the smspartner-stoplist sink needs SMS_REPLIES_SMSPARTNER_API_KEY")
        return cls(
            own.api_key.get_secret_value(),
            base_url=own.base_url,
            timeout=own.timeout,
            max_attempts=own.max_attempts,
            backoff_initial=own.backoff_initial,
            backoff_max=own.backoff_max,
            retry_after_max=own.retry_after_max,
            concurrency=own.concurrency,
        )

    def __repr__(self) -> str:
        return f"SmsPartnerStopListSink({self.origin!r})"

    async def setup(self) -> None:
        """Opens the HTTP session; calls nothing (a call would change the list)."""
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
        numbers = self._numbers(batch)
        if not numbers:
            return
        limit = asyncio.Semaphore(self.concurrency)

        async def one(number: str) -> _Outcome:
            async with limit:
                return await self._push(number)

        outcomes = await asyncio.gather(*(one(number) for number in numbers))
        verdicts = Counter(o.verdict for o in outcomes if o.verdict is not None)
        added, listed = verdicts[Verdict.ADDED], verdicts[Verdict.ALREADY_LISTED]
        self.counts.update(added=added, already_listed=listed)
        if added or listed:
            log.info(
                "smspartner stop list %s: %d numbers added, %d already listed",
                self.origin,
                added,
                listed,
            )
        gave_up = [o for o in outcomes if o.verdict is None]
        if gave_up:
            raise SinkWriteError(
                f"smspartner stop list {self.origin}: {len(gave_up)} of {len(numbers)} numbers "
                f"not pushed: {gave_up[0].detail} ({gave_up[0].attempts} attempts)",
                retriable=True,
            )
        rejected = [o for o in outcomes if o.verdict is Verdict.REJECTED]
        if rejected:
            self.counts.update(rejected=len(rejected))
            raise SinkWriteError(
                f"smspartner stop list {self.origin}: refused {len(rejected)} of "
                f"{len(numbers)} numbers: {rejected[0].detail}",
                retriable=False,
            )

    def _numbers(self, batch: Sequence[Reply]) -> list[str]:
        """Distinct numbers of the batch's STOP replies; refuses a sender that is no number."""
        numbers: dict[str, None] = {}
        skipped = 0
        for reply in unique_by_id(batch):
            if not reply.is_stop:
                continue
            sender = reply.sender
            if not isinstance(sender, str):  # a reply built by hand with the wrong types
                raise SinkWriteError("smspartner stop list: sender is not text", retriable=False)
            if is_pseudonym(sender):
                skipped += 1
            elif pushable(sender):
                numbers[sender] = None
            else:
                raise SinkWriteError(
                    "smspartner stop list: sender is not an E.164 number", retriable=False
                )
        if skipped:
            self.counts.update(skipped_pseudonym=skipped)
            log.warning(
                "smspartner stop list: %d STOP replies from pseudonymised senders skipped "
                "(no number to push; %d since start)",
                skipped,
                self.counts["skipped_pseudonym"],
            )
        return list(numbers)

    async def _push(self, number: str) -> _Outcome:
        """One number, retried here up to max_attempts; then the runner's turn."""
        body = request_body(self._api_key, number)
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                status, text, retry_after = await self._post(body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            else:
                answer = classify(status, text)
                if answer.verdict in _FINAL:
                    return _Outcome(answer.verdict, answer.detail, attempt)
                problem = answer.detail
                if answer.verdict is Verdict.CREDENTIALS:
                    log.error(
                        "smspartner stop list %s: the API key was refused (%s): "
                        "check SMS_REPLIES_SMSPARTNER_API_KEY; retrying",
                        self.origin,
                        problem,
                    )
            if attempt >= self.max_attempts:
                return _Outcome(None, problem, attempt)
            delay = backoff(
                attempt,
                initial=self.backoff_initial,
                ceiling=self.backoff_max,
                retry_after=retry_after,
                retry_after_max=self.retry_after_max,
            )
            self.counts.update(retried=1)
            log.warning(
                "smspartner stop list %s: %s (attempt %d of %d); retry in %.1fs",
                self.origin,
                problem,
                attempt,
                self.max_attempts,
                delay,
            )
            await asyncio.sleep(delay)

    async def _post(self, body: bytes) -> tuple[int, bytes, float | None]:
        """(status, body, Retry-After seconds) of one POST; redirects are answers, not followed."""
        await self.setup()
        assert self._session is not None
        async with self._session.post(
            self.url,
            data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            allow_redirects=False,
        ) as response:
            text = bytearray()  # an answer is a few dozen bytes: read it whole, up to 64 KiB
            while len(text) < _MAX_ANSWER:
                chunk = await response.content.read(_MAX_ANSWER - len(text))
                if not chunk:
                    break
                text += chunk
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            return response.status, bytes(text), retry_after


_MAX_ANSWER = 65536

#: Answers that end the push of a number (the others are retried).
_FINAL = frozenset({Verdict.ADDED, Verdict.ALREADY_LISTED, Verdict.REJECTED})
