"""`run`'s callback token: made once, kept 0600 in the data dir, shown once, masked in logs."""

from __future__ import annotations

import logging
import stat
import sys
from pathlib import Path

import pytest

from sms_replies.callback_token import banner, token_path, with_callback_token
from sms_replies.errors import ConfigError
from sms_replies.logs import MASK, MaskingFormatter
from sms_replies.settings import Settings


def test_a_token_is_made_at_first_start_and_kept_for_the_next(tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path / "data")
    first, source = with_callback_token(settings)
    assert source == "generated"
    assert first.callback_token is not None
    token = first.callback_token.get_secret_value()
    assert len(token) >= 32
    path = token_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token
    again, source = with_callback_token(settings)
    assert source == "file"
    assert again.callback_token is not None
    assert again.callback_token.get_secret_value() == token


def test_a_configured_token_wins_and_nothing_is_written(tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path / "data", callback_token="mine-1234")
    kept, source = with_callback_token(settings)
    assert (kept, source) == (settings, "setting")
    assert not token_path(settings).exists()


def test_a_kept_token_readable_by_others_is_made_private(tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path)
    token_path(settings).write_text("copied-token\n")
    token_path(settings).chmod(0o644)
    kept, source = with_callback_token(settings)
    assert source == "file"
    assert kept.callback_token is not None
    assert kept.callback_token.get_secret_value() == "copied-token"
    assert stat.S_IMODE(token_path(settings).stat().st_mode) == 0o600


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path)
    token_path(settings).write_text("\n")
    with pytest.raises(ConfigError, match="callback-token is empty"):
        with_callback_token(settings)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_the_banner_never_gives_a_wildcard_address_as_the_url(host: str) -> None:
    settings = Settings.load(http_host=host, http_port=8080, callback_token="s3cret-token")
    for source in ("generated", "file", "setting"):
        text = banner(settings, source)  # type: ignore[arg-type]
        assert "0.0.0.0" not in text
        assert "http://:" not in text
        assert "[::]" not in text
        assert "http://<this host's public name or address>:8080/callbacks/smspartner" in text


def test_the_banner_shows_the_token_only_when_just_made() -> None:
    settings = Settings.load(http_port=8080, callback_token="s3cret-token")
    made = banner(settings, "generated")
    assert "http://127.0.0.1:8080/callbacks/smspartner?token=s3cret-token" in made
    assert "s3cret-token" not in banner(settings, "file")
    assert "callback-token>" in banner(settings, "file")
    assert "s3cret-token" not in banner(settings, "setting")
    assert "SMS_REPLIES_CALLBACK_TOKEN>" in banner(settings, "setting")


def test_log_lines_and_tracebacks_mask_every_secret() -> None:
    settings = Settings.load(callback_token="s3cret-token", pseudonymize_key="k3y-material")
    formatter = MaskingFormatter("%(message)s", settings.secret_values())
    try:
        raise ValueError("bad token s3cret-token")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "x",
        logging.INFO,
        __file__,
        1,
        "GET /cb?token=%s key %s",
        ("s3cret-token", "k3y-material"),
        exc_info,
    )
    line = formatter.format(record)
    assert "s3cret-token" not in line
    assert "k3y-material" not in line
    assert line.startswith(f"GET /cb?token={MASK} key {MASK}")
    assert f"ValueError: bad token {MASK}" in line
