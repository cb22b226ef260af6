"""Logging set-up for the command line processes (library code only gets loggers)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TextIO

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


#: Faust's "same as above" mark in its tables.
_DITTO = "\u3003"


def flatten_table(message: str) -> str:
    """One line from a message that carries a Faust ASCII table (borders and rows).

    ``"active offsets:\n+--+\n| topic | partition |\n+--+\n| t | 0 |"`` becomes
    ``"active offsets: topic partition; t 0"``; ditto marks repeat the cell above.
    """
    if "\n" not in message:
        return message
    text: list[str] = []
    rows: list[str] = []
    above: list[str] = []
    for line in message.split("\n"):
        stripped = line.strip()
        if stripped.startswith("+") and stripped.endswith("+"):
            continue  # a border, its title included
        if stripped.startswith("|") and stripped.endswith("|"):
            cells = [cell.strip() for cell in stripped[1:-1].split("|")]
            cells = [
                above[i] if cell == _DITTO and i < len(above) else cell
                for i, cell in enumerate(cells)
            ]
            above = cells
            rows.append(" ".join(cells))
        elif stripped:
            text.append(stripped)
    return " ".join(text) + (" " + "; ".join(rows) if rows else "")


class PlainFaustLines(logging.Filter):
    """Faust's tables as one line each, for logs that go to a file or a pipe."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(("faust", "mode")):
            record.msg = flatten_table(record.getMessage())
            record.args = ()
        return True


def on_terminal(stream: TextIO | None) -> bool:
    """Whether ``stream`` is a terminal (only then spinners, colours and tables)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def configure(level: str, component: str, secrets: Iterable[str] = ()) -> None:
    """Log to stderr with the component's name; ``secrets`` never appear in a line.

    Off a terminal (a file, a pipe, journald) every line is one log record:
    Faust's tables are flattened, and no process writes terminal escape codes.
    """
    handler = logging.StreamHandler()
    fmt = f"%(asctime)s %(levelname)-7s [{component}] %(name)s: %(message)s"
    handler.setFormatter(MaskingFormatter(fmt, secrets))
    if not on_terminal(sys.stderr):
        handler.addFilter(PlainFaustLines())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # aiokafka logs every reconnect attempt at ERROR during an outage; our own
    # warnings already say what is going on.
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.WARNING))
