"""``make contract``: the full schemathesis runs (every phase and check, default example
counts, fixed seed) against a real analytics API (``sms-replies api`` with a token, over
the sample store written by the DuckDB sink) and a real ingress (``sms-replies ingest``
with its callback token, on an embedded broker). Prints the figures docs/security.md
quotes; exits 1 when schemathesis found anything.

    python -m tests.contract [--seed N] [--keep-output DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sms_replies.broker.admin import ensure_topics
from sms_replies.broker.embedded import EmbeddedBroker, free_port
from sms_replies.settings import Settings
from tests.analytics_sample import write_sample
from tests.contract.schemathesis_run import CALLBACKS_CONFIG, SEED, StRun, run_st

API_TOKEN = "contract-run-api-token-0123456789"
CALLBACK_TOKEN = "contract-run-callback-token-0123"


def wait_for(url: str, headers: dict[str, str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def api_run(work: Path, seed: int) -> StRun:
    data = work / "data"
    write_sample(data / "replies.duckdb")
    port = free_port()
    env = {
        **os.environ,
        "SMS_REPLIES_DATA_DIR": str(data),
        "SMS_REPLIES_API_PORT": str(port),
        "SMS_REPLIES_API_TOKEN": API_TOKEN,
    }
    with (work / "api.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "sms_replies", "api"], env=env, stdout=log, stderr=log
        )
    try:
        schema = f"http://127.0.0.1:{port}/api/openapi.json"
        wait_for(schema, {"Authorization": f"Bearer {API_TOKEN}"})
        return run_st(schema, "-H", f"Authorization: Bearer {API_TOKEN}", seed=seed)
    finally:
        server.terminate()
        server.wait(30)


def ingress_run(work: Path, seed: int) -> StRun:
    with EmbeddedBroker() as broker:
        port = free_port()
        settings = Settings.load(
            kafka_bootstrap=broker.bootstrap,
            kafka_embedded=True,
            topic_prefix="contract",
            http_port=port,
            data_dir=work / "ingress",
        )
        asyncio.run(ensure_topics(settings.bootstrap, settings.topics, partitions=1))
        env = {**os.environ, **settings.as_env(), "SMS_REPLIES_CALLBACK_TOKEN": CALLBACK_TOKEN}
        with (work / "ingest.log").open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "sms_replies", "ingest"], env=env, stdout=log, stderr=log
            )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(f"{base}/readyz", {})
            return run_st(
                f"{base}/openapi.json",
                config=CALLBACKS_CONFIG,
                seed=seed,
                env={"SMS_REPLIES_CALLBACK_TOKEN": CALLBACK_TOKEN},
            )
        finally:
            server.terminate()
            server.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--keep-output", type=Path, help="write schemathesis' output there")
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="sms-replies-contract-") as tmp:
        for name, run in (("analytics API", api_run), ("callback endpoint", ingress_run)):
            started = time.monotonic()
            result = run(Path(tmp), args.seed)
            took = time.monotonic() - started
            print(f"{name}: {result.summary()} ({took:.0f} s, seed {args.seed})", flush=True)
            if args.keep_output:
                args.keep_output.mkdir(parents=True, exist_ok=True)
                (args.keep_output / f"{name.replace(' ', '-')}.txt").write_text(result.output)
            if not result.clean:
                print(result.output, file=sys.stderr)
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
