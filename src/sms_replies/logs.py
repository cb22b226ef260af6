"""Logging set-up for the command line processes (library code only gets loggers)."""

from __future__ import annotations

import logging


def configure(level: str, component: str) -> None:
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)-7s [{component}] %(name)s: %(message)s",
        force=True,
    )
    # aiokafka logs every reconnect attempt at ERROR during an outage; our own
    # warnings already say what is going on.
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.WARNING))
