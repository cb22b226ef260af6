"""``make bench``: every benchmark on the embedded broker, tables, docs/benchmarks.md and plots.

    python -m benchmarks                  # full run (about 30 min on 2 cores)
    python -m benchmarks --quick          # short run (about 6 min)
    python -m benchmarks --only memory    # any of ingress,reassembly,sinks,end_to_end,memory,
                                          # stores_scale
    python -m benchmarks --only stores_scale --rows 1000000   # row counts of stores_scale
    python -m benchmarks --only reassembly --loads mixed      # loads of reassembly (mixed:
                                          # grouped as the ingress writes it, one per record)

Figures are kept in docs/benchmarks.json, one entry per benchmark with the
command and the machine that produced it; a partial run updates its entries
and docs/benchmarks.md is rebuilt from all of them. Benchmarks are not tests:
nothing here fails on a slow machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks import end_to_end, ingress, memory, reassembly, sinks, stores_scale
from benchmarks.common import machine

ALL = ("ingress", "reassembly", "sinks", "end_to_end", "memory", "stores_scale")
DOCS = Path("docs")


def _benchmarks(
    quick: bool, rows: list[int] | None = None, loads: tuple[str, ...] | None = None
) -> dict[str, Callable[[], Any]]:
    scale_rows = rows or (stores_scale.QUICK_ROWS if quick else stores_scale.ROWS)
    return {
        "ingress": lambda: ingress.run(duration=3 if quick else 10),
        "reassembly": lambda: reassembly.run(
            50_000 if quick else 200_000,
            loads=tuple(reassembly.select_loads(loads) if loads else reassembly.LOADS),
        ),
        "sinks": lambda: sinks.run(rows_per_run=20_000 if quick else 50_000),
        "end_to_end": lambda: end_to_end.run(
            end_to_end.QUICK_RATES if quick else end_to_end.RATES,
            step_seconds=5 if quick else 10,
        ),
        "memory": lambda: memory.run(60_000 if quick else 1_000_000, rate=1500),
        "stores_scale": lambda: stores_scale.run(scale_rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs")
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated benchmarks")
    parser.add_argument("--docs", type=Path, default=DOCS, help="where to write the report")
    parser.add_argument(
        "--rows",
        type=stores_scale.parse_rows,
        help="stores_scale row counts, comma-separated (default 1000000,10000000; quick 100000)",
    )
    parser.add_argument(
        "--loads",
        type=_loads,
        help="reassembly loads or workloads, comma-separated (default: "
        + ", ".join(f"'{name}'" for name in reassembly.LOADS)
        + "; 'mixed' = both mixed loads)",
    )
    args = parser.parse_args()
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(wanted) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    console = Console(width=140)
    store = args.docs / "benchmarks.json"
    saved: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    command = "python -m benchmarks " + shlex.join(sys.argv[1:])
    runners = _benchmarks(args.quick, args.rows, args.loads)
    for name in wanted:
        console.rule(name)
        started = time.monotonic()
        results = runners[name]()
        saved[name] = {
            "results": results,
            "command": command.strip(),
            "quick": args.quick,
            "seconds": round(time.monotonic() - started),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(),
        }
        console.print(_render(name, results))
        args.docs.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(saved, indent=1, default=str))
    from benchmarks.report import write_report

    write_report(saved, args.docs)
    console.print(f"report: {args.docs / 'benchmarks.md'}")


def _loads(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    try:
        reassembly.select_loads(names)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def _render(name: str, results: Any) -> Any:
    if name == "ingress":
        return ingress.render(results)
    if name == "reassembly":
        return reassembly.render(results)
    if name == "sinks":
        return sinks.render(results)
    if name == "end_to_end":
        return end_to_end.render(results)
    if name == "stores_scale":
        return stores_scale.render(results)
    return memory.render(results)


if __name__ == "__main__":
    main()
