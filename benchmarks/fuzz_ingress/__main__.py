"""``python -m benchmarks.fuzz_ingress``: a full run, its figures and its failures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson
from rich.console import Console

from benchmarks.fuzz_ingress import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-log", type=Path, help="copy the ingress's log there")
    args = parser.parse_args()
    figures = run(
        args.requests,
        seed=args.seed,
        concurrency=args.concurrency,
        console=Console(),
        keep_log=args.keep_log,
    )
    print(orjson.dumps({k: v for k, v in figures.items() if k != "by_kind"}).decode())
    if figures["failures"]:
        print("FAILED: " + "; ".join(figures["failures"]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
