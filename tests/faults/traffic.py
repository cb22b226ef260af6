"""The provider's side: a seeded workload of callbacks, and a client that retries like it.

Every callback of the workload is a delivery the provider makes. It is
retried until it gets a 200: 503s and connection errors after a short delay.
Any other status is a failure of the run (a well-formed callback must be
accepted), kept in :attr:`Delivery.refused`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

Encoding = Literal["get", "form", "json"]
ENCODINGS: tuple[Encoding, ...] = ("get", "form", "json")

LONG_NUMBERS = ("33756781234", "33756781235")
WORDS = [
    "oui",
    "non",
    "merci",
    "demain",
    "rappel",
    "rendez-vous",
    "vendredi",
    "matin",
    "soir",
    "adresse",
    "livraison",
    "colis",
    "commande",
    "annuler",
    "confirmer",
    "réponse",
    "désolé",
    "été",
    "à",
    "bientôt",
    "€5",
    "ok",
    "d'accord",
    "numéro",
    "svp",
    "info",
    "prix",
    "magasin",
    "horaires",
]


@dataclass(frozen=True, slots=True)
class Expected:
    """One reply the store must hold exactly once."""

    sender: str  # E.164, as stored
    ids: tuple[str, ...]  # provider_message_ids, in part order
    text: str
    parts: int

    @property
    def key(self) -> tuple[str, tuple[str, ...], str]:
        return (self.sender, self.ids, self.text)


@dataclass(frozen=True, slots=True)
class Callback:
    """One delivery by the provider."""

    encoding: Encoding
    fields: dict[str, Any]
    message: int  # index in the expected list
    duplicate: bool  # a re-delivery of a callback already in the workload


@dataclass
class Workload:
    expected: list[Expected]
    callbacks: list[Callback]
    shapes: Counter[str] = field(default_factory=Counter)


def _phone(rng: random.Random, digits: str) -> str:
    """One subscriber in one of the formats the provider uses: 336..., +336..., 06..."""
    national = "0" + digits[2:]
    return rng.choice((digits, "+" + digits, national))


def _text(rng: random.Random, tag: str, length: int) -> str:
    words = [tag]
    while sum(len(w) + 1 for w in words) < length:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:length]


class _Builder:
    def __init__(self, rng: random.Random, run_tag: str) -> None:
        self.rng = rng
        self.run_tag = run_tag
        self.expected: list[Expected] = []
        self.callbacks: list[Callback] = []
        self.shapes: Counter[str] = Counter()
        self._ids = 0
        self._refs: dict[str, int] = {}
        self._short_seen: set[tuple[str, str, str, str]] = set()
        self.senders = [f"336{rng.randrange(10_000_000, 99_999_999)}" for _ in range(400)]

    def _id(self) -> str:
        self._ids += 1
        return f"0{self.run_tag}{self._ids:09d}"

    def _ref(self, sender: str, to: str) -> int:
        # concat-ref is a per-handset counter; a message's key (to, sender, ref,
        # total) stays unique within the run, as it does within the dedup horizon.
        key = f"{to}|{sender}"
        self._refs[key] = self._refs.get(key, self.rng.randrange(256)) + 1
        return self._refs[key] % 65536

    def _deliver(self, encoding: Encoding, fields: dict[str, Any], message: int) -> None:
        self.callbacks.append(Callback(encoding, fields, message, duplicate=False))

    def long_message(self, parts: int) -> int:
        rng = self.rng
        index = len(self.expected)
        sender, to = rng.choice(self.senders), rng.choice(LONG_NUMBERS)
        ref = self._ref(sender, to)
        unicode = rng.random() < 0.3
        texts = [_text(rng, f"[{index}.{p}]", rng.randrange(60, 153)) for p in range(1, parts + 1)]
        ids = [self._id() for _ in range(parts)]
        for p in range(1, parts + 1):
            fields: dict[str, Any] = {
                "msisdn": sender,
                "to": to,
                "messageId": ids[p - 1],
                "text": texts[p - 1],
                "type": "unicode" if unicode else "text",
                "concat": "true",
                "concat-ref": str(ref),
                "concat-total": str(parts),
                "concat-part": str(p),
                "message-timestamp": "2025-03-10 09:51:46",
            }
            self._deliver(rng.choice(ENCODINGS), fields, index)
        self.expected.append(Expected("+" + sender, tuple(ids), "".join(texts), parts))
        self.shapes[f"long_{parts}_parts"] += 1
        return parts

    def single_message(self) -> int:
        rng = self.rng
        index = len(self.expected)
        sender = rng.choice(self.senders)
        message_id = self._id()
        text = _text(rng, f"[{index}]", rng.randrange(2, 120))
        fields: dict[str, Any] = {
            "msisdn": sender,
            "to": rng.choice(LONG_NUMBERS),
            "messageId": message_id,
            "text": text,
            "type": "text",
            "message-timestamp": "2025-03-10 09:51:46",
        }
        self._deliver(rng.choice(ENCODINGS), fields, index)
        self.expected.append(Expected("+" + sender, (message_id,), text, 1))
        self.shapes["long_single"] += 1
        return 1

    def short_message(self) -> int:
        rng = self.rng
        index = len(self.expected)
        while True:
            sender = rng.choice(self.senders)
            # message_id names the campaign message replied to: shared by many replies.
            campaign = str(rng.randrange(1000, 1010))
            if rng.random() < 0.1:
                kind, text = "stop", rng.choice(("STOP", "stop", ""))
            else:
                kind, text = "response", _text(rng, f"[{index}]", rng.randrange(2, 120))
            identity = (sender, campaign, kind, text)
            if identity not in self._short_seen:  # else it *is* the same reply
                self._short_seen.add(identity)
                break
        fields: dict[str, Any] = {
            "type": kind,
            "phone_number": _phone(rng, sender),
            "text": text,
            "message_id": campaign,
        }
        self._deliver(rng.choice(ENCODINGS), fields, index)
        self.expected.append(Expected("+" + sender, (campaign,), text, 1))
        self.shapes[f"short_{kind}"] += 1
        return 1

    def duplicate(self) -> None:
        """Deliver an earlier callback again, in another encoding half of the time."""
        rng = self.rng
        original = rng.choice([c for c in self.callbacks[-200:] if not c.duplicate])
        encoding = original.encoding
        fields = dict(original.fields)
        if rng.random() < 0.5:
            encoding = rng.choice([e for e in ENCODINGS if e != encoding])
            if "phone_number" in fields:
                fields["phone_number"] = _phone(rng, "33" + _national_digits(fields))
        if encoding == "json" and rng.random() < 0.5:
            for name in ("concat-ref", "concat-total", "concat-part"):
                if name in fields:
                    fields[name] = int(fields[name])  # JSON numbers, as some gateways send
        self.callbacks.append(Callback(encoding, fields, original.message, duplicate=True))
        self.shapes["duplicate_delivery"] += 1


def _national_digits(fields: dict[str, Any]) -> str:
    """The 9 digits after +33, whatever the format of phone_number."""
    digits = str(fields["phone_number"]).lstrip("+")
    return digits[1:] if digits.startswith("0") else digits[2:]


def build_workload(
    callbacks: int, seed: int, *, duplicate_rate: float = 0.1, run_tag: str = "F"
) -> Workload:
    """About ``callbacks`` deliveries (exactly, unless fewer than 1): shuffled, with duplicates."""
    rng = random.Random(seed)
    builder = _Builder(rng, run_tag)
    while len(builder.callbacks) < callbacks:
        room = callbacks - len(builder.callbacks)
        if builder.callbacks and room >= 1 and rng.random() < duplicate_rate:
            builder.duplicate()
            continue
        roll = rng.random()
        if roll < 0.35 and room >= 2:
            builder.long_message(rng.randint(2, min(4, room)))
        elif roll < 0.7:
            builder.single_message()
        else:
            builder.short_message()
    rng.shuffle(builder.callbacks)
    return Workload(builder.expected, builder.callbacks, builder.shapes)


@dataclass
class DeliveryStats:
    callbacks: int = 0
    delivered: int = 0
    attempts: int = 0
    status_503: int = 0
    connection_errors: int = 0
    other_statuses: Counter[int] = field(default_factory=Counter)
    refused: list[tuple[int, Callback]] = field(default_factory=list)
    undelivered: list[Callback] = field(default_factory=list)
    max_attempts_one_callback: int = 0
    first_sent_at: float | None = None
    last_accepted_at: float | None = None


class Provider:
    """Delivers callbacks at ``rate`` per second with ``concurrency`` connections, retrying."""

    def __init__(
        self,
        url: str,
        *,
        rate: float,
        concurrency: int = 32,
        retry_delay: tuple[float, float] = (0.1, 0.5),
        give_up_after: float = 300.0,
        request_timeout: float = 15.0,
        seed: int = 0,
    ) -> None:
        self.url = url
        self.rate = rate
        self.concurrency = concurrency
        self.retry_delay = retry_delay
        self.give_up_after = give_up_after
        self.request_timeout = request_timeout
        self.rng = random.Random(seed)
        self.stats = DeliveryStats()

    async def deliver_all(self, callbacks: list[Callback]) -> DeliveryStats:
        self.stats.callbacks = len(callbacks)
        queue: asyncio.Queue[tuple[int, Callback]] = asyncio.Queue()
        for item in enumerate(callbacks):
            queue.put_nowait(item)
        started = time.monotonic()
        self.stats.first_sent_at = started
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            workers = [
                asyncio.create_task(self._work(session, queue, started))
                for _ in range(self.concurrency)
            ]
            await asyncio.gather(*workers)
        return self.stats

    async def _work(
        self,
        session: aiohttp.ClientSession,
        queue: asyncio.Queue[tuple[int, Callback]],
        started: float,
    ) -> None:
        while not queue.empty():
            number, callback = queue.get_nowait()
            release = started + number / self.rate
            delay = release - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._deliver(session, callback)

    async def _deliver(self, session: aiohttp.ClientSession, callback: Callback) -> None:
        stats = self.stats
        give_up = time.monotonic() + self.give_up_after
        attempts = 0
        while True:
            attempts += 1
            stats.attempts += 1
            try:
                status = await self._send(session, callback)
            except (aiohttp.ClientError, TimeoutError):
                stats.connection_errors += 1
            else:
                if status == 200:
                    stats.delivered += 1
                    stats.last_accepted_at = time.monotonic()
                    break
                if status == 503:
                    stats.status_503 += 1
                else:
                    stats.other_statuses[status] += 1
                    if 400 <= status < 500:  # will never be accepted: the run fails
                        stats.refused.append((status, callback))
                        break
            if time.monotonic() > give_up:
                stats.undelivered.append(callback)
                break
            await asyncio.sleep(self.rng.uniform(*self.retry_delay))
        stats.max_attempts_one_callback = max(stats.max_attempts_one_callback, attempts)

    async def _send(self, session: aiohttp.ClientSession, callback: Callback) -> int:
        fields = callback.fields
        if callback.encoding == "get":
            query = {k: str(v) for k, v in fields.items()}
            async with session.get(self.url, params=query) as response:
                await response.read()
                return response.status
        if callback.encoding == "form":
            form = {k: str(v) for k, v in fields.items()}
            async with session.post(self.url, data=form) as response:
                await response.read()
                return response.status
        async with session.post(self.url, json=fields) as response:
            await response.read()
            return response.status
