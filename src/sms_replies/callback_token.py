"""The callback token of ``run``: generated at first start, kept in the data directory.

A callback URL without a token lets anyone who guesses it write replies. When
``SMS_REPLIES_CALLBACK_TOKEN`` is not set, ``run`` makes one the first time
and keeps it in ``<data dir>/callback-token`` (mode 0600), so the URL given to
the provider stays valid across restarts. The banner shows it that first time
only; log lines never show it (see :mod:`sms_replies.logs`).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from sms_replies.errors import ConfigError
from sms_replies.files import write_private
from sms_replies.ingest.app import CALLBACK_PATH
from sms_replies.settings import WILDCARD_HOSTS, Settings

TOKEN_FILE = "callback-token"
#: Where the token came from: this start made it, an earlier start did, or the settings.
TokenSource = Literal["generated", "file", "setting"]


def token_path(settings: Settings) -> Path:
    return settings.data_dir / TOKEN_FILE


def with_callback_token(settings: Settings) -> tuple[Settings, TokenSource]:
    """``settings`` with a callback token: the configured one, the kept one, or a new one."""
    if settings.callback_token is not None:
        return settings, "setting"
    path = token_path(settings)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        token, source = _read(path), "file"
        if token is None:
            token, source = _create(path), "generated"
    except OSError as exc:
        raise ConfigError(
            f"SMS_REPLIES_DATA_DIR: cannot keep the callback token in {path} "
            f"({exc.strerror or exc})"
        ) from None
    updated = settings.model_copy(update={"callback_token": SecretStr(token)})
    return updated, "generated" if source == "generated" else "file"


def _read(path: Path) -> str | None:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not token:
        raise ConfigError(f"SMS_REPLIES_CALLBACK_TOKEN: {path} is empty; delete it for a new one")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # copied around with looser rights: only the owner reads it
    return token


def _create(path: Path) -> str:
    token = secrets.token_urlsafe(24)  # 192 bits, nothing to percent-encode
    write_private(path, token + "\n")
    return token


def public_base(settings: Settings) -> str:
    """The ingress's address as the provider must see it; never 0.0.0.0."""
    host = settings.http_host
    if host in WILDCARD_HOSTS:
        host = "<this host's public name or address>"
    elif ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}"


def banner(settings: Settings, source: TokenSource) -> str:
    """What ``run`` prints once ready: the URL to give SMS Partner, the token shown once."""
    url = f"{public_base(settings)}{CALLBACK_PATH}"
    token = settings.callback_token
    if token is None:
        return f"sms-replies is running. Callback URL: {url}"
    if source == "generated":
        return (
            f"sms-replies is running. Callback URL: {url}?token={token.get_secret_value()}\n"
            f"A new callback token was made and kept in {token_path(settings)}; "
            "it is shown this once (masked in the logs)."
        )
    where = token_path(settings) if source == "file" else "SMS_REPLIES_CALLBACK_TOKEN"
    return f"sms-replies is running. Callback URL: {url}?token=<the token in {where}>"
