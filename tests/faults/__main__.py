"""``python -m tests.faults --callbacks 5000``: the fault-injection suite in full.

Exit status 0 when the store held exactly the expected replies, 1 otherwise.
The figures are printed, and written as JSON with ``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

from tests.faults.harness import FAULT_KINDS, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--callbacks", type=int, default=5000, help="deliveries by the provider")
    parser.add_argument("--seed", type=int, default=None, help="workload and faults (random)")
    parser.add_argument("--rate", type=float, default=60.0, help="callbacks per second")
    parser.add_argument("--concurrency", type=int, default=32, help="provider connections")
    parser.add_argument("--duplicate-rate", type=float, default=0.1)
    parser.add_argument(
        "--min-each", type=int, default=1, help="inject every fault kind at least this often"
    )
    parser.add_argument(
        "--lanes", type=int, default=2, help="concurrent fault schedules (>1: faults overlap)"
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--quiescence-timeout", type=float, default=240.0)
    parser.add_argument("--work-dir", type=Path, default=None, help="kept (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work dir")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    figures = run(
        args.callbacks,
        seed=seed,
        rate=args.rate,
        concurrency=args.concurrency,
        duplicate_rate=args.duplicate_rate,
        min_each=args.min_each,
        lanes=args.lanes,
        partitions=args.partitions,
        quiescence_timeout=args.quiescence_timeout,
        work_dir=args.work_dir,
        keep=args.keep,
    )
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0 if figures["ok"] else 1


def report(figures: dict[str, Any]) -> str:
    store = figures["store"]
    lines = [
        "PASS: the store holds exactly the expected replies"
        if figures["ok"]
        else "FAIL: the store does not hold exactly the expected replies",
        f"seed                      {figures['seed']}",
        f"callbacks sent            {figures['callbacks']}"
        f" ({figures['duplicate_deliveries']} duplicate deliveries)",
        f"replies expected          {figures['replies_expected']}  {figures['shapes']}",
        f"HTTP attempts             {figures['http_attempts']}",
        f"503 answers               {figures['http_503']}",
        f"connection errors         {figures['connection_errors']}",
        f"other statuses            {figures['other_statuses'] or '-'}",
        f"max attempts, 1 callback  {figures['max_attempts_one_callback']}",
        "faults injected           "
        + ", ".join(f"{kind} {figures['faults'][kind]}" for kind in FAULT_KINDS)
        + f" (total {figures['faults_total']}, {figures['fault_lanes']} lane(s))",
        f"exits not injected        {figures['unexpected_exits'] or '-'}",
        f"sending took              {figures['send_duration_s']} s at {figures['rate_per_s']}/s",
        f"faults after last 200     {figures['last_fault_after_last_ack_s']} s",
        f"time to quiescence        {figures['time_to_quiescence_s']} s",
        f"duration                  {figures['duration_s']} s",
        f"store rows                {store['rows']} (missing {store['missing']}, "
        f"doubled {store['doubled']}, extra {store['extra']}, malformed {store['malformed']})",
    ]
    for name in ("missing", "doubled", "extra", "malformed"):
        for sample in store[f"{name}_sample"]:
            lines.append(f"  {name}: {sample}")
    if figures["work_dir"]:
        lines.append(f"work dir (logs, store)    {figures['work_dir']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
