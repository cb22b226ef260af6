"""Logging set-up for the command line processes (library code only gets loggers)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

#: What a secret becomes in a log line.
MASK = "***"
#: Shorter values are not masked: they would blank out ordinary words.
MIN_MASKED_LENGTH = 4


class MaskingFormatter(logging.Formatter):
    """Replaces every secret value in the formatted line, traceback included."""

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        # Longest first: a secret that contains another is masked whole.
        self.secrets = sorted(
            {s for s in secrets if len(s) >= MIN_MASKED_LENGTH}, key=len, reverse=True
        )

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self.secrets:
            line = line.replace(secret, MASK)
        return line


def configure(level: str, component: str, secrets: Iterable[str] = ()) -> None:
    """Log to stderr with the component's name; ``secrets`` never appear in a line."""
    handler = logging.StreamHandler()
    fmt = f"%(asctime)s %(levelname)-7s [{component}] %(name)s: %(message)s"
    handler.setFormatter(MaskingFormatter(fmt, secrets))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # aiokafka logs every reconnect attempt at ERROR during an outage; our own
    # warnings already say what is going on.
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.WARNING))
