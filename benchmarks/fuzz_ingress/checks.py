"""What must hold after a fuzz run, as results (a list of failures), not asserts."""

from __future__ import annotations

from typing import Any


def check(figures: dict[str, Any]) -> list[str]:
    failures = []
    server_errors = {
        s: n for s, n in figures["statuses"].items() if s.startswith("5") and s != "503"
    }
    if server_errors:
        failures.append(f"5xx answers: {server_errors}")
    if figures["leaks"]:
        failures.append(f"{figures['leaks']} answers carried a traceback")
    if not figures["ingress_alive"]:
        failures.append("the ingress process died")
    if figures["valid_after"] != 200:
        failures.append(f"a valid callback afterwards got {figures['valid_after']}")
    if figures["internal_errors_logged"]:
        failures.append(f"{figures['internal_errors_logged']} internal errors in the ingress log")
    if figures["rate_limited"] > figures["router_rejects_answered"]:
        failures.append(
            f"{figures['rate_limited']} audits rate-limited, more than the "
            f"{figures['router_rejects_answered']} 404/405 answered"
        )
    if figures["audited"] + figures["rate_limited"] < figures["app_rejects_answered"]:
        failures.append(
            f"{figures['app_rejects_answered']} rejects answered, {figures['audited']} audited "
            f"and {figures['rate_limited']} rate-limited"
        )
    return failures
