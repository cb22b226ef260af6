"""``make run`` installs the runtime dependencies only: every module outside the
PostgreSQL and ClickHouse drivers' own must import without the optional extras.

The dev install (``make test``) has every driver, which hid a top-level ``import
asyncpg`` reached from the CLI: on a clean clone ``make run`` died at start-up.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from sms_replies.stores.selection import PrivacyStoreError

# Packages of the optional extras ([postgres], [clickhouse]) and of [dev].
_NOT_IN_RUNTIME = (
    "asyncpg",
    "psycopg",
    "clickhouse_driver",
    "chdb",
    "hypothesis",
    "matplotlib",
    "psutil",
    "quixstreams",
    "playwright",
    "yaml",
    "jsonschema",
    "schemathesis",
    "pytest",
)

# The modules that are the driver's adapter (loaded only when that store is chosen)
# and the sink authors' pytest kit (loaded by pytest).
_NEED_AN_EXTRA = {
    "sms_replies.sinks.clickhouse",
    "sms_replies.sinks.postgres",
    "sms_replies.sinks.testing",
    "sms_replies.stores.clickhouse",
    "sms_replies.stores.postgres",
}

_WALK = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    for name in sys.argv[1:]:
        sys.modules[name] = None  # import of it raises ImportError, as when not installed
    import sms_replies
    for info in pkgutil.walk_packages(sms_replies.__path__, "sms_replies."):
        if info.name == "sms_replies.__main__":  # runs the CLI; sms_replies.cli is walked
            continue
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            print(info.name, exc, sep="\\t")
    """
)


def test_every_module_but_the_drivers_imports_without_the_extras() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WALK, *_NOT_IN_RUNTIME],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    failed = dict(line.split("\t", 1) for line in result.stdout.splitlines())
    assert set(failed) == _NEED_AN_EXTRA, failed


def test_the_cli_starts_without_the_extras() -> None:
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in _NOT_IN_RUNTIME)
    code = f"import sys; {blocked}; from sms_replies.cli import main; main(['run', '--help'])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_erasing_in_postgres_without_its_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sms_replies.stores as stores_package
    from sms_replies.stores import deletes

    monkeypatch.delattr(stores_package, "postgres", raising=False)
    monkeypatch.setitem(sys.modules, "sms_replies.stores.postgres", None)
    with pytest.raises(PrivacyStoreError, match=r"sms-replies\[postgres\]"):
        deletes._postgres_store()
