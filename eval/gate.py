"""The promotion verdict (`eval.gate`): PROMOTE or HOLD, with the reason, from the eval results.

PROMOTE when the paired interval of tuned - base of the gated metric on the gated set lies entirely above
`min_delta`, and (with `retention_max_drop`) the upper end of the interval of every retention set's loss increase
is at most that limit: promotion needs the evidence, a noisy interval holds.
"""

from __future__ import annotations

from typing import Any

from tailor.schema import GateSettings

PROMOTE, HOLD = "PROMOTE", "HOLD"
HOLD_EXIT_CODE = 3  # `python -m eval RECIPE --gate` on HOLD


def gate_set(gate: GateSettings, set_names: list[str]) -> str:
    """The set the gate reads: its own, else the recipe's first eval set."""
    return gate.set or set_names[0]


def verdict(results: dict[str, Any], gate: GateSettings, set_name: str) -> dict[str, Any]:
    """{decision, promote, reason, checks, settings} from results holding `sets` (and `retention`)."""
    checks: list[dict[str, Any]] = []
    comparison = results.get("sets", {}).get(set_name, {}).get("comparisons", {}).get(gate.metric)
    if comparison is None:
        checks.append({"check": f"{gate.metric} on {set_name}", "passed": False,
                       "text": f"{gate.metric} on {set_name}: no paired interval of tuned - base"})
    else:
        low, high = comparison["ci_low"], comparison["ci_high"]
        passed = low > gate.min_delta
        where = "lies above" if passed else "does not lie entirely above"
        checks.append({"check": f"{gate.metric} on {set_name}", "passed": passed, "delta": comparison["delta"],
                       "ci_low": low, "ci_high": high, "limit": gate.min_delta,
                       "text": f"{gate.metric} on {set_name}: {comparison['delta']:+.4f} [{low:+.4f}, {high:+.4f}] "
                               f"{where} {gate.min_delta:+.4f}"})
    if gate.retention_max_drop is not None:
        retention = (results.get("retention") or {}).get("sets", {})
        if not retention:
            checks.append({"check": "retention", "passed": False, "text": "retention: no retention set was measured"})
        for name, r in retention.items():
            passed = r["ci_high"] <= gate.retention_max_drop
            checks.append({"check": f"retention {name}", "passed": passed, "delta": r["delta"], "ci_low": r["ci_low"],
                           "ci_high": r["ci_high"], "limit": gate.retention_max_drop,
                           "text": f"retention {name}: loss {r['delta']:+.4f} [{r['ci_low']:+.4f}, "
                                   f"{r['ci_high']:+.4f}] {'within' if passed else 'may exceed'} the allowed "
                                   f"increase {gate.retention_max_drop:.4f}"})
    promote = all(c["passed"] for c in checks)
    failed = [c["text"] for c in checks if not c["passed"]]
    reason = "; ".join(c["text"] for c in checks) if promote else "; ".join(failed)
    return {"decision": PROMOTE if promote else HOLD, "promote": promote, "reason": reason, "set": set_name,
            "checks": checks, "settings": gate.model_dump(mode="json")}
