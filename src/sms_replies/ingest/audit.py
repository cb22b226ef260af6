"""Bounded audit records of refused requests (pure, no I/O).

Every refusal of the ingress is kept in the rejects topic, which lives in the
broker's memory when the broker is the embedded one: a record must stay small
whatever the request was, and noise (scanners probing unknown paths) must not
fill the topic. So the body and the query are each cut at ``max_bytes`` of
JSON, the other request fields at fixed sizes, and the fields cut are listed
in ``truncated``; refusals of unknown paths pass a token bucket.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

# Fixed bounds of the small fields (bytes of JSON). The router's own refusals
# carry whatever path a scanner sent, up to the request-line limit.
PATH_BYTES: Final = 1024
CONTENT_TYPE_BYTES: Final = 256
METHOD_BYTES: Final = 32
KEY_BYTES: Final = 64
REASON_BYTES: Final = 256
# The query's secret (our URL token) never enters the audit trail.
SECRET_PARAMS: Final = frozenset({"token"})


def clip(text: str, max_bytes: int) -> tuple[str, bool]:
    """``text`` cut so that its JSON form (quotes and escapes included) fits ``max_bytes``."""
    size = len(orjson.dumps(text))
    if size <= max_bytes:
        return text, False
    while size > max_bytes and text:
        # Proportional cut, then again if escapes still overflow: a few rounds at most.
        text = text[: max(0, min(len(text) - 1, len(text) * max_bytes // size))]
        size = len(orjson.dumps(text))
    return text, True


def _clip_pairs(pairs: Iterable[tuple[str, str]], max_bytes: int) -> tuple[dict[str, str], bool]:
    """As a JSON object of at most ``max_bytes``: keys cut at KEY_BYTES, then values."""
    kept: dict[str, str] = {}
    budget = max_bytes
    cut = False
    for key, value in pairs:
        key, key_cut = clip(key, KEY_BYTES)
        key_cost = len(orjson.dumps(key)) + 2  # plus ':' and ','
        if budget - key_cost < 2:  # not even room for an empty value
            return kept, True
        value, value_cut = clip(value, budget - key_cost)
        kept[key] = value
        budget -= key_cost + len(orjson.dumps(value))
        cut = cut or key_cut or value_cut
    return kept, cut


def audit_record(
    *,
    status: int,
    reason: str,
    problems: Mapping[str, str],
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    content_type: str,
    body: bytes | None,
    remote: str | None,
    received_at_ms: int,
    max_bytes: int,
) -> bytes:
    """The JSON audit record of one refusal, at most 3 x ``max_bytes`` + 2 KiB.

    ``max_bytes`` bounds each of the body, the query and the problems.

    ``body`` is what was read of it (``None``: not read); bytes that are not
    UTF-8 are kept as ``\\xNN`` escapes so the record shows exactly what came.
    """
    truncated: list[str] = []

    def bounded(name: str, text: str, limit: int) -> str:
        kept, cut = clip(text, limit)
        if cut:
            truncated.append(name)
        return kept

    kept_query, query_cut = _clip_pairs(
        ((k, v) for k, v in query if k not in SECRET_PARAMS), max_bytes
    )
    if query_cut:
        truncated.append("query")
    kept_problems, problems_cut = _clip_pairs(problems.items(), max_bytes)
    if problems_cut:
        truncated.append("problems")
    kept_body: str | None = None
    if body is not None:
        # Cut the bytes first: decoding escapes may only grow them.
        kept_body = bounded(
            "body", body[: max_bytes + 1].decode("utf-8", "backslashreplace"), max_bytes
        )
    record: dict[str, Any] = {
        "status": status,
        "reason": bounded("reason", reason, REASON_BYTES),
        "problems": kept_problems,
        "method": bounded("method", method, METHOD_BYTES),
        "path": bounded("path", path, PATH_BYTES),
        "query": kept_query,
        "content_type": bounded("content_type", content_type, CONTENT_TYPE_BYTES),
        "body": kept_body,
        "remote": remote,
        "received_at_ms": received_at_ms,
    }
    if truncated:
        record["truncated"] = sorted(set(truncated))
    return orjson.dumps(record)


@dataclass(slots=True)
class TokenBucket:
    """``rate`` events a second on average, at most ``burst`` at once."""

    rate: float
    burst: int
    _tokens: float = field(init=False)
    _at: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)

    def take(self, now: float) -> bool:
        """Spend a token if one is left at time ``now`` (monotonic seconds)."""
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
