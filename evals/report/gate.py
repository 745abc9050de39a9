"""``unilip eval gate``: a CI verdict on a run against a baseline, by per-metric rules.

Exit codes: 0 pass, 1 fail (a rule is broken), 2 refused (the comparison would not be meaningful:
missing items, another protocol fingerprint, a ruled metric not computed, malformed rules).

Rules file (YAML)::

    benchmark: recon@standard        # which result of the run to judge
    min_coverage: 1.0                # fraction of items that must be scored (default 1.0)
    metrics:
      psnr:  {max_drop: 0.05}        # may fall at most 0.05 below the baseline
      ssim:  {max_drop: 0.002}
      rfid:  {max_increase: 0.05}    # may rise at most 0.05 above the baseline
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PASS, FAIL, REFUSED = 0, 1, 2
RULE_KINDS = ("max_drop", "max_increase")


@dataclass
class Verdict:
    code: int
    benchmark: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def word(self) -> str:
        return {PASS: "pass", FAIL: "fail", REFUSED: "refused"}[self.code]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.word,
            "exit_code": self.code,
            "benchmark": self.benchmark,
            "checks": self.checks,
            "reasons": self.reasons,
        }

    def markdown(self) -> str:
        lines = [f"## unilip gate: **{self.word.upper()}** ({self.benchmark})", ""]
        lines += [f"- {reason}" for reason in self.reasons]
        if self.checks:
            lines += ["", "| metric | baseline | run | change | rule | result |", "|---|---|---|---|---|---|"]
            for check in self.checks:
                lines.append(
                    f"| {check['metric']} | {check['baseline']:.6g} | {check['run']:.6g} | "
                    f"{check['change']:+.6g} | {check['rule']} | {'ok' if check['ok'] else 'BROKEN'} |"
                )
        return "\n".join(lines) + "\n"


def load_rules(path: str | Path) -> dict[str, Any]:
    """The rules file, checked: a malformed one is a ``ValueError`` (exit 2, refused), never a crash."""
    try:
        rules = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(rules, dict) or not isinstance(rules.get("metrics"), dict) or not rules["metrics"]:
        raise ValueError(f"{path}: rules need a 'metrics' mapping, e.g. metrics: {{psnr: {{max_drop: 0.05}}}}")
    for metric, rule in rules["metrics"].items():
        if not isinstance(rule, dict) or not set(rule) <= set(RULE_KINDS) or not rule:
            raise ValueError(f"{path}: rule for {metric!r} must use {' or '.join(RULE_KINDS)}; got {rule!r}")
        for kind, limit in rule.items():
            if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit) or limit < 0:
                raise ValueError(f"{path}: {metric}: {kind} must be a number >= 0; got {limit!r}")
    if "min_coverage" in rules:
        value = rules["min_coverage"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{path}: min_coverage must be a fraction in [0, 1]; got {value!r}")
    return rules


RESULT_KEYS = ("benchmark", "spec", "coverage", "metrics")


def _unreadable(result: dict[str, Any], side: str) -> str | None:
    """Why ``result`` is not a results.json the gate can read, or None."""
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        return f"the {side} ({result.get('_path', '?')}) is not a results file: no {', '.join(missing)}"
    if "fingerprint" not in result["spec"] or not {"missing", "expected", "fraction"} <= set(result["coverage"]):
        return f"the {side} ({result.get('_path', '?')}) is not a results file: its spec or coverage is incomplete"
    return None


def judge(run: dict[str, Any], baseline: dict[str, Any], rules: dict[str, Any]) -> Verdict:
    """Compare a run's result with a baseline result under ``rules``."""
    verdict = Verdict(code=PASS, benchmark=str(run.get("benchmark", "?")))
    broken = [why for why in (_unreadable(run, "run"), _unreadable(baseline, "baseline")) if why]
    if broken:
        verdict.reasons += broken
        verdict.code = REFUSED
        return verdict
    wanted = rules.get("benchmark")
    if wanted and run["benchmark"] != wanted:
        verdict.reasons.append(f"the rules are for {wanted}, the run is {run['benchmark']}")
    if baseline["benchmark"] != run["benchmark"]:
        verdict.reasons.append(f"the baseline is {baseline['benchmark']}, the run is {run['benchmark']}")
    if baseline["spec"]["fingerprint"] != run["spec"]["fingerprint"]:
        changed = sorted(
            k
            for k in set(run["spec"]["knobs"]) | set(baseline["spec"]["knobs"])
            if run["spec"]["knobs"].get(k) != baseline["spec"]["knobs"].get(k)
        )
        verdict.reasons.append(
            f"protocol fingerprint differs from the baseline's ({run['spec']['fingerprint'][:8]} vs "
            f"{baseline['spec']['fingerprint'][:8]}; changed: {', '.join(changed) or 'version'})"
        )
    coverage = run["coverage"]
    if coverage["missing"]:
        verdict.reasons.append(f"the run is incomplete: {coverage['missing']} of {coverage['expected']} items missing")
    min_coverage = float(rules.get("min_coverage", 1.0))
    if coverage["fraction"] < min_coverage:
        verdict.reasons.append(f"coverage {coverage['fraction']:.3f} is below the required {min_coverage}")
    for metric in rules["metrics"]:
        for side, result in (("run", run), ("baseline", baseline)):
            entry = result["metrics"].get(metric)
            if entry is None or entry.get("status") == "not_computed":
                why = entry.get("reason", "no reason recorded").splitlines()[0] if entry else "absent"
                verdict.reasons.append(f"{metric} is not computed in the {side} ({why}); a rule cannot judge it")
            elif not isinstance(entry.get("value"), (int, float)) or not math.isfinite(entry["value"]):
                verdict.reasons.append(f"{metric} is {entry.get('value')!r} in the {side}; a rule cannot judge it")
    if verdict.reasons:
        verdict.code = REFUSED
        return verdict
    for metric, rule in rules["metrics"].items():
        new, old = run["metrics"][metric]["value"], baseline["metrics"][metric]["value"]
        change = new - old
        for kind, limit in rule.items():
            ok = change >= -limit if kind == "max_drop" else change <= limit
            verdict.checks.append(
                {
                    "metric": metric,
                    "baseline": old,
                    "run": new,
                    "change": change,
                    "rule": f"{kind} {limit}",
                    "ok": bool(ok),
                }
            )
    if not all(check["ok"] for check in verdict.checks):
        verdict.code = FAIL
    return verdict
