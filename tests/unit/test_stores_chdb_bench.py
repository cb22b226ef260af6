"""The scale benchmark's chdb store (a current ClickHouse engine): loads, and answers as DuckDB.

The benchmark's ``chdb`` row times the product's queries on a current engine; this
checks on a few thousand synthetic rows that they run there and give DuckDB's figures.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from benchmarks.stores_backends import DuckDBBackend
from benchmarks.stores_queries import product_queries
from benchmarks.stores_synth import Generator

stores_chdb = pytest.importorskip("benchmarks.stores_chdb")

ROWS = 3000


def test_chdb_store_answers_as_duckdb(tmp_path: Path) -> None:
    duck = DuckDBBackend(tmp_path)
    duck.load(Generator(ROWS))
    expected = {name: query() for name, query in product_queries(duck.url()).items()}
    with contextlib.ExitStack() as stack:
        chdb = stores_chdb.ChdbBackend(tmp_path, stack)
        chdb.load(Generator(ROWS))
        assert chdb.version().startswith("clickhouse ")
        assert (chdb.size_bytes() or 0) > 0
        answers = {
            name: query() for name, query in product_queries(chdb.url(), chdb.reader).items()
        }
    for name in ("summary", "timeseries", "campaigns"):
        assert answers[name] == expected[name], name
    ids = [
        [item["reply_id"] for item in page.items]
        for page in (answers["search"], expected["search"])
    ]  # type: ignore[attr-defined]
    assert ids[0] == ids[1]
    assert ids[0]
