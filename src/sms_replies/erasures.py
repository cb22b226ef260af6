"""The erasure list: a keyed hash of every erased number, consulted by the worker and the sinks.

``sms-replies erase`` deletes what the stores hold; the list stops what comes
*after*: a part the provider re-sends within the dedup horizon, a reply still
in the replies topic, a replay. The worker drops parts of a listed sender and
its held state; the sinks drop its replies.

It lives in the data directory (``<data_dir>/erasures``), one ``h:<hex>`` line
per number, appended and fsynced by ``erase``: the worker and the sinks share
that directory (``run``, and the compose file's ``/data`` volume), it survives
a restart of the embedded broker (memory only, so a topic would not), and
``erase`` needs no broker to find. Each line is the number's pseudonym
(:func:`sms_replies.privacy.pseudonymize`) under ``SMS_REPLIES_PSEUDONYMIZE_KEY``
or, without that key, under a random key kept beside the list
(``<data_dir>/erasures.key``): never an unkeyed hash that a guess could match.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Final

from sms_replies.files import write_private
from sms_replies.privacy import is_pseudonym, pseudonymize

log = logging.getLogger(__name__)

LIST_FILE: Final = "erasures"
KEY_FILE: Final = "erasures.key"
#: ``<name>`` in it: how much of the list sink ``name`` had read, last time it wrote nothing.
SEEN_DIR: Final = "erasures.seen"


def list_key(
    data_dir: Path, pseudonymize_key: bytes | None, *, create: bool = False
) -> bytes | None:
    """The key of the list: the pseudonymisation key, else the local one (None: none yet)."""
    if pseudonymize_key is not None:
        return pseudonymize_key
    path = data_dir / KEY_FILE
    if not path.exists():
        if not create:
            return None
        data_dir.mkdir(parents=True, exist_ok=True)
        write_private(path, secrets.token_hex(32))
    return path.read_text().strip().encode()


def add_erasure(data_dir: Path, number: str, pseudonymize_key: bytes | None) -> str:
    """Append ``number``'s keyed hash to the list (idempotent); returns the hash."""
    key = list_key(data_dir, pseudonymize_key, create=True)
    assert key is not None
    entry = pseudonymize(number, key)
    path = data_dir / LIST_FILE
    if path.exists() and entry in path.read_text().split():
        return entry
    write_private(path, entry + "\n", append=True)
    return entry


class ErasureList:
    """The list as one process sees it; :meth:`refresh` re-reads it when the file changed."""

    def __init__(self, data_dir: Path, pseudonymize_key: bytes | None) -> None:
        self.data_dir = data_dir
        self.pseudonymize_key = pseudonymize_key
        self._key: bytes | None = None
        self._hashes: frozenset[str] = frozenset()
        self._seen: tuple[int, int] | None = None
        #: Bumped each time the list grows: callers purge what they hold once per generation.
        self.generation = 0

    def refresh(self) -> bool:
        """Read the file again if it changed (a stat otherwise); True when it did."""
        path = self.data_dir / LIST_FILE
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        seen = (stat.st_size, stat.st_mtime_ns)
        if seen == self._seen:
            return False
        hashes = frozenset(line for line in path.read_text().split() if is_pseudonym(line))
        self._key = list_key(self.data_dir, self.pseudonymize_key)
        self._seen = seen
        if hashes != self._hashes:
            self._hashes = hashes
            self.generation += 1
            log.info("erasure list: %d numbers", len(hashes))
            return True
        return False

    def acknowledge(self, name: str) -> None:
        """Record that ``name`` applies the list as read so far (call with no write under way).

        ``erase`` waits for this before deleting, so that a write started before
        the number was listed cannot land after the deletion.
        """
        seen = str(self._seen[0] if self._seen else 0)
        path = self.data_dir / SEEN_DIR / name
        try:
            if path.read_text() == seen:
                return
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{name}.tmp")
        temporary.write_text(seen)
        os.replace(temporary, path)

    def __len__(self) -> int:
        return len(self._hashes)

    def is_erased(self, sender: str) -> bool:
        """``sender`` (E.164 or its pseudonym) is on the list."""
        if not self._hashes:
            return False
        if is_pseudonym(sender):
            return sender in self._hashes
        return self._key is not None and pseudonymize(sender, self._key) in self._hashes


def unseen_by(data_dir: Path, names: list[str]) -> list[str]:
    """The names (sinks) that have not acknowledged the whole list yet.

    A sink that never ran with this data directory (no acknowledgement at all)
    has no write under way and reads the list before its first: not waited for.
    """
    try:
        size = (data_dir / LIST_FILE).stat().st_size
    except FileNotFoundError:
        return []
    late = []
    for name in names:
        try:
            seen = int((data_dir / SEEN_DIR / name).read_text() or 0)
        except FileNotFoundError:
            continue
        except ValueError:
            seen = -1
        if seen < size:
            late.append(name)
    return late
