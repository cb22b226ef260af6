"""Run schemathesis (``st run``) against a live server and read its verdict.

Used by the short checks of ``make test`` (tests/integration/test_api_contract.py)
and by the full runs of ``make contract`` (``python -m tests.contract``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The callback endpoint's configuration: the token (from SMS_REPLIES_CALLBACK_TOKEN)
# and the 422 of well-formed fields that make no callback.
CALLBACKS_CONFIG = REPO / "tests" / "contract" / "callbacks.toml"
# The repository's schemathesis.toml is read from the working directory.
ST = Path(sys.executable).with_name("st")
SEED = 20261201


@dataclass(frozen=True, slots=True)
class StRun:
    operations: int
    generated: int
    failures: int
    returncode: int
    output: str

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and self.failures == 0 and self.generated > 0

    def summary(self) -> str:
        return (
            f"{self.operations} operations, {self.generated} cases generated, "
            f"{self.failures} failures"
        )


def run_st(
    location: str,
    *args: str,
    config: Path | None = None,
    seed: int = SEED,
    timeout: float = 3600,
    env: dict[str, str] | None = None,
) -> StRun:
    """``st run location --checks all --seed seed *args``, from the repository's root."""
    command = [str(ST)]
    if config is not None:
        command += ["--config-file", str(config)]
    command += [
        "run",
        location,
        "--checks",
        "all",
        "--seed",
        str(seed),
        "--no-color",
        "--generation-database",
        "none",
        *args,
    ]
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    output = result.stdout + result.stderr
    return StRun(
        operations=_number(r"Tested:\s+(\d+)", output),
        generated=_number(r"(\d+) generated", output),
        failures=_number(r"(\d+) unique failures?", output),
        returncode=result.returncode,
        output=output,
    )


def _number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    return int(found.group(1)) if found else 0
