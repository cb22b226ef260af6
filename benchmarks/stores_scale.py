"""Scale of the analytics stores: load N synthetic replies, time the product's questions.

    python -m benchmarks.stores_scale --rows 1000000
    python -m benchmarks.stores_scale --rows 1000000,10000000 --stores duckdb,clickhouse
    python -m benchmarks --only stores_scale --rows 1000000      # as part of make bench

For each row count and store, a child process (its own peak RSS) generates the
replies (:mod:`benchmarks.stores_synth`), bulk-loads them through the store's
native path with the product's DDL (:mod:`benchmarks.stores_backends`), then
times each question of :mod:`benchmarks.stores_queries`: one warm-up run, then
the median of ``--runs`` runs. The load average is recorded next to the
figures (the machine's cores are shared). Results go to docs/benchmarks.json
(entry ``stores_scale``, merged by store and row count) and to their own
section of docs/benchmarks.md. Target: every question under 1 s on DuckDB and
ClickHouse at 10 M rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks import stores_queries
from benchmarks.stores_backends import (
    Backend,
    ClickHouseBackend,
    DuckDBBackend,
    PostgresBackend,
    Unavailable,
)
from benchmarks.stores_synth import Generator
from sms_replies.errors import SmsRepliesError

log = logging.getLogger(__name__)

STORES = ("duckdb", "postgresql", "clickhouse", "chdb")
ROWS = (1_000_000, 10_000_000)
QUICK_ROWS = (100_000,)
RUNS = 5
TARGET_S = 1.0
TARGET_STORES = ("duckdb", "clickhouse", "chdb")
SLOW_S = 20.0  # a question whose warm-up took longer is timed once more, not --runs times
NAME = "stores_scale"


def run(
    rows: Sequence[int] = ROWS, stores: Sequence[str] = STORES, runs: int = RUNS
) -> list[dict[str, Any]]:
    """Every (row count, store) in its own child process; one dict of figures each."""
    results = []
    for count in rows:
        for store in stores:
            log.info("stores_scale: %s, %d rows", store, count)
            results.append(_child(store, count, runs))
    return results


def _child(store: str, rows: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable,
            "-m",
            "benchmarks.stores_scale",
            "--child",
            store,
            "--rows",
            str(rows),
            "--runs",
            str(runs),
            "--out",
            str(out),
        ]
        done = subprocess.run(command, check=False)
        if done.returncode != 0 or not out.exists():
            return {"store": store, "rows": rows, "skipped": f"child exited {done.returncode}"}
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def measure(store: str, rows: int, runs: int) -> dict[str, Any]:
    """In the child: load ``rows`` into ``store``, time the questions."""
    root = Path(tempfile.mkdtemp(prefix=f"scale-{store}-"))
    result: dict[str, Any] = {"store": store, "rows": rows, "runs": runs}
    try:
        with contextlib.ExitStack() as stack:
            try:
                backend, questions = _open(store, root, stack)
            except Unavailable as exc:
                result["skipped"] = str(exc)
                return result
            result["version"] = backend.version()
            result["loadavg_before"] = _loadavg()
            started = time.perf_counter()
            backend.load(Generator(rows))
            load_s = time.perf_counter() - started
            result["load_s"] = round(load_s, 1)
            result["rows_per_s"] = round(rows / load_s)
            result["size_mib"] = _mib(backend.size_bytes())
            result["queries"] = {name: _time(query, runs) for name, query in questions.items()}
            result["loadavg_after"] = _loadavg()
            result["peak_rss_mib"] = round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            )
            result["server_rss_mib"] = _mib(backend.server_rss_bytes())
            if isinstance(backend, PostgresBackend):
                backend.drop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


def _open(
    store: str, root: Path, stack: contextlib.ExitStack
) -> tuple[Backend, dict[str, stores_queries.Query]]:
    backend: Backend
    if store == "duckdb":
        backend = DuckDBBackend(root)
    elif store == "postgresql":
        backend = PostgresBackend(root)
    elif store == "chdb":
        try:
            from benchmarks.stores_chdb import ChdbBackend
        except ImportError as exc:  # chdb: the dev extra
            raise Unavailable(f"chdb is not installed: {exc}") from None
        chdb_backend = ChdbBackend(root, stack)
        return chdb_backend, stores_queries.product_queries(chdb_backend.url(), chdb_backend.reader)
    else:
        backend = ClickHouseBackend(root, stack)
    return backend, stores_queries.product_queries(backend.url())


def _time(query: stores_queries.Query, runs: int) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        query()  # warm-up: caches, plans, first connection
    except SmsRepliesError as exc:  # a statement timeout, above all
        log.warning("stores_scale: %s", exc)
        return {
            "median_s": None,
            "error": str(exc),
            "after_s": round(time.perf_counter() - started),
        }
    warm_up = time.perf_counter() - started
    if warm_up > SLOW_S:  # far off the target: one more run is enough to know
        runs = 1
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        query()
        times.append(time.perf_counter() - started)
    return {
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "runs": len(times),
    }


def _loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _mib(value: int | None) -> int | None:
    return None if value is None else round(value / 2**20)


# -- output -------------------------------------------------------------------------


def _verdict(r: dict[str, Any]) -> str:
    if r["store"] not in TARGET_STORES or r["rows"] < 10_000_000:
        return "-"
    medians = [q["median_s"] for q in r["queries"].values()]
    if None in medians:
        return "no"
    worst = max(medians)
    return "yes" if worst < TARGET_S else f"no ({worst:.2f} s)"


def _cell(q: dict[str, Any]) -> str:
    if q["median_s"] is None:
        return f"failed after {q['after_s']} s"
    return f"{q['median_s']:.3f}"


def render(results: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="Analytics stores at scale (median s of the runs after a warm-up)")
    headers = ["store", "rows", "load s", "rows/s", "MiB", *stores_queries.NAMES]
    headers += ["peak RSS MiB", "load avg", "< 1 s"]
    for column in headers:
        table.add_column(column, justify="left" if column == "store" else "right")
    for row in rows_of(results):
        table.add_row(*(str(cell) for cell in row))
    return table


def rows_of(results: Sequence[dict[str, Any]]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for r in sorted(results, key=lambda r: (r["rows"], STORES.index(r["store"]))):
        if "skipped" in r:
            out.append([r["store"], f"{r['rows']:,}", "skipped: " + r["skipped"]])
            continue
        queries = [_cell(r["queries"][name]) for name in stores_queries.NAMES]
        load = f"{r['loadavg_before'][0]:.1f}-{r['loadavg_after'][0]:.1f}"
        out.append(
            [
                r.get("version", r["store"]),
                f"{r['rows']:,}",
                r["load_s"],
                f"{r['rows_per_s']:,}",
                r["size_mib"],
                *queries,
                r["peak_rss_mib"]
                if r.get("server_rss_mib") is None
                else f"{r['peak_rss_mib']} (+{r['server_rss_mib']} server)",
                load,
                _verdict(r),
            ]
        )
    return out


def markdown(entry: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md (``report.render_markdown`` includes it)."""
    results = entry["results"]
    headers = ["store", "rows", "load s", "rows/s", "MiB on disk", *stores_queries.NAMES]
    headers += ["peak RSS MiB", "load avg", "all < 1 s"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows_of(results):
        cells = [str(cell) for cell in row] + [""] * (len(headers) - len(row))
        lines.append("| " + " | ".join(cells) + " |")
    return [
        "## Analytics stores at scale",
        "",
        "`python -m benchmarks.stores_scale --rows N` (`--stores`, `--runs`): N synthetic",
        "replies (about 50,000 senders, four long numbers and the short number, 35 days,",
        "3 % STOPs, 10 % long replies, a third with a campaign from their URL; 20",
        "campaigns) bulk-loaded with the product's DDL (DuckDB: INSERT from Arrow;",
        "PostgreSQL: COPY from CSV, then VACUUM ANALYZE; ClickHouse: 500,000-row INSERTs, then",
        "OPTIMIZE FINAL). `clickhouse-server 18.16` is Debian's package, the only server that",
        "installs here; production runs a current server, so the `chdb` row loads the same",
        "rows into a current ClickHouse engine in-process (chdb, `benchmarks/stores_chdb.py`:",
        "the product's DDL with DateTime64, INSERT from Arrow, OPTIMIZE FINAL) and runs the",
        "same product queries through the ClickHouse reader: the engine's cost, not a",
        "server's protocol. Questions: `summary` (stats over 30 days), `timeseries` (hour",
        "buckets over 30 days, Europe/Paris), `campaigns` (every campaign's figures),",
        "`search` (newest 100 replies of the busiest sender): the product's functions,",
        "a reader opened per call as the CLI and the API do. Each figure is the median",
        "in seconds of the runs after one warm-up (one run when the warm-up took over",
        f"{SLOW_S:g} s); load avg is the 1-minute load average",
        "before the load and after the queries (2 cores shared with other work).",
        "Target: every question under 1 s on DuckDB and ClickHouse at 10 M rows.",
        "",
        *lines,
        "",
        'In the DDL for these questions (docs/analytics.md, "Scale", says why and what',
        "each change measured): PostgreSQL indexes `replies (sender, received_at)`",
        "(search at 10 M rows 2.1 s -> 0.09 s); ClickHouse orders `replies` by",
        "`(sender, reply_id)` (search at 1 M rows with FINAL 7.6 s -> 0.04 s); DuckDB has no",
        "index (arrival order gives `received_at` zone maps; an ART index on `sender`",
        "saved 0.06 s for 34 s of build). What misses 1 s is query shape: two",
        "`count(DISTINCT sender)` (grouping by sender first: 5.7x), the zone bucket by",
        "`timezone()` per row (integer offsets: 2.3x), the campaigns' OR cross join (two",
        "equi-joins: 12x on ClickHouse) and `FINAL` (2.6x); measured alternatives there.",
        "ClickHouse reads `replies` without `FINAL` while each month is one merged part",
        "(the load ends with OPTIMIZE FINAL; a table receiving inserts is read with `FINAL`),",
        "marks campaigns as bits of one integer (each reply's number by one `transform`,",
        "its campaigns' bits looked up in a table of (number, time slice); 3c341d4) and",
        "counts distinct senders per bucket grouping by sender",
        "first (docs/analytics.md, Scale: the server CPU per question). The machine's 2",
        "cores are shared: wall times move 2-4x with the load average (docs/analytics.md,",
        "Scale, has the same questions on a quiet machine and the CPU time of each).",
        "Since dc8c56d ClickHouse's campaign figures group the replies by their campaigns'",
        "bits (a few dozen groups) instead of one row per (reply, campaign). The 10 M rows",
        "above, 16:41-16:45 UTC, nothing else running: DuckDB answers all four under 1 s;",
        "campaigns stay over it on ClickHouse (18.16: 1.62 s; chdb: 1.02 s, and 1.04 s at",
        "17:02 UTC after cbe36c2's grouping sets, its row above, the other questions 10-15 %",
        "slower in that run too).",
        "",
        *_provenance(entry),
        "",
    ]


def _provenance(entry: dict[str, Any]) -> list[str]:
    runs = sorted({r["measured"] for r in entry["results"] if "measured" in r})
    if not runs:
        return [f"Measured {entry['date']} with `{entry['command']}`, {entry['seconds']} s."]
    return ["Measured " + "; ".join(runs) + "."]


def save(results: list[dict[str, Any]], docs: Path, command: str, seconds: float) -> None:
    """Merge into docs/benchmarks.json (by store and rows) and rebuild docs/benchmarks.md."""
    from benchmarks.common import machine
    from benchmarks.report import write_report

    store = docs / "benchmarks.json"
    saved: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    kept = [
        r
        for r in saved.get(NAME, {}).get("results", [])
        if (r["store"], r["rows"]) not in {(n["store"], n["rows"]) for n in results}
    ]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for r in results:
        r.setdefault("measured", f"{stamp}, `{command}`")
    saved[NAME] = {
        "results": kept + results,
        "command": command,
        "quick": False,
        "seconds": round(seconds),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
    }
    docs.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps(saved, indent=1, default=str))
    write_report(saved, docs)


def parse_rows(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", default=",".join(map(str, ROWS)), help="row counts, comma")
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated stores")
    parser.add_argument("--runs", type=int, default=RUNS, help="timed runs per question")
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="where to write")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument("--child", choices=STORES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows = parse_rows(args.rows)
    if args.child:
        result = measure(args.child, rows[0], args.runs)
        args.out.write_text(json.dumps(result))
        return
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = set(stores) - set(STORES)
    if unknown:
        parser.error(f"unknown stores: {', '.join(sorted(unknown))}")
    started = time.monotonic()
    results = run(rows, stores, args.runs)
    Console(width=160).print(render(results))
    if not args.no_docs:
        command = "python -m benchmarks.stores_scale " + " ".join(sys.argv[1:])
        save(results, args.docs, command.strip(), time.monotonic() - started)


if __name__ == "__main__":
    main()
