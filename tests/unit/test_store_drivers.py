"""A store whose driver (an optional extra) is not installed: one line naming the install step."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sms_replies.stores.errors import StoreError
from sms_replies.stores.readers import ClickHouseReader, PostgresReader
from sms_replies.stores.url import parse_store_url


@pytest.mark.parametrize(
    ("reader", "url", "module", "extra"),
    [
        (PostgresReader, "postgresql://u@127.0.0.1:1/db", "psycopg", "postgres"),
        (ClickHouseReader, "clickhouse://127.0.0.1:1/db", "clickhouse_driver", "clickhouse"),
    ],
)
def test_missing_driver_is_a_store_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, reader: type, url: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    with pytest.raises(StoreError, match=rf"needs the {module} package: pip install .*\[{extra}\]"):
        reader(parse_store_url(url, default_duckdb=Path("unused.duckdb")))
