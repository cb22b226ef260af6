"""What every HTTP server of the project shares: no library versions in answers.

aiohttp adds ``Server: Python/3.x aiohttp/3.y`` to every answer, the plain-text
400s of its HTTP parser included, which no middleware or signal reaches. Those
versions only help an attacker pick an exploit, so the header says the product
name instead.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web_response

SERVER_NAME: Final = "sms-replies"


def hide_server_version() -> None:
    """Answers of this process say ``Server: sms-replies`` (idempotent).

    aiohttp writes its ``SERVER_SOFTWARE`` with ``setdefault`` when it prepares
    the headers of any answer; there is no setting for it. Tests assert the
    header on a routed answer and on a parser error, so a change of aiohttp's
    internals shows.
    """
    web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]
