"""Policy -> verdict, and the regression comparison against a baseline run.

Verdicts (thresholds from the policy; defaults shown):
- NOT_UNLEARNED: r(none, qa) above 0.5;
- HIDDEN: otherwise, some other cell's lower bound is above 0.25 (those cells decide);
- REMOVED: every informative cell's upper bound is below 0.10, and the plan covered what it must: a
  self-checked, powered cell of each attack family it ran and of quantization and relearning, and one of a
  probe that looks past the model's output;
- INCONCLUSIVE: anything else (too few items, intervals too wide, no informative direct cell, a gap in coverage).

An attack's cells count as evidence only when it passed the self-check: the
original, attacked the same way, kept its own residual within the policy's
tolerance of 1. An attack that destroys what a model knows (or lifts the floor
as much) cannot reveal hidden knowledge, and netted against the reference its
damage would read as removal; its cells are ``self-check failed``.

The certified bound is the largest upper bound over the informative cells: no
attack of the plan recovers more than that share of what the original knew (at
the policy's confidence, 95% by default). REMOVED means it lies under the
removal threshold. A cell whose interval would reach the threshold even at a
residual of zero is ``underpowered``: it can still show HIDDEN, never removal.
Cells that are skipped, have fewer than ``min_items`` items, or are
uninformative decide nothing: a cell is uninformative when the original beats
the floor (the reference) by less than ``min_gap`` on the probe's own scale,
since the residual is then a ratio of two small, noisy differences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from auditor.errors import EXIT_GATE_FAILED, EXIT_INCONCLUSIVE, EXIT_PASS
from auditor.stats.outcome import (
    cell_outcome,
    collateral_failed,
    evidence,
    high,
    informative,
    low,
    passes_self_check,
    underpowered,
)
from auditor.stats.policy import Policy
from auditor.types import NO_ATTACK, Cell, Label, ProbeRoles, Verdict

T = TypeVar("T")


def certified_bound(cells: list[Cell], policy: Policy) -> tuple[float | None, list[Cell]]:
    """The largest upper bound over the cells that are evidence, and the cells that keep the audit from
    REMOVED."""
    usable = [c for c in cells if evidence(c, policy)]
    if not usable:
        return None, []
    limiting = [c for c in usable if high(c) >= policy.for_cell(c.attack, c.probe).removed]
    return max(high(c) for c in usable), limiting


def _describe(cell: Cell) -> str:
    return f"{cell.attack} x {cell.probe}: residual {cell.residual:.2f} [{low(cell):.2f}, {high(cell):.2f}]"


def direct_cell(cells: list[T], where: Callable[[T], tuple[str, str]], direct_probes: tuple[str, ...]) -> T | None:
    """The cell a naive evaluation sees: the models as given, asked directly (the first of ``direct_probes``, the
    plan's probes that ask the forget questions as given, by rank)."""
    for probe in direct_probes:
        found = next((c for c in cells if where(c) == (NO_ATTACK, probe)), None)
        if found is not None:
            return found
    return None


def _covers(cell: Cell, policy: Policy) -> bool:
    """Whether a cell is evidence with the power to show removal."""
    return evidence(cell, policy) and not underpowered(cell, policy.for_cell(cell.attack, cell.probe).removed)


def _family_gap(family: str, cells: list[Cell], policy: Policy) -> str:
    """Why no cell of ``family`` covers it."""
    own = [c for c in cells if c.family == family]
    if not own:
        return f"no {family} attack in the plan"
    failed = [c for c in own if informative(c, policy) and not passes_self_check(c.self_check, policy)]
    if failed:
        worst = min(failed, key=lambda c: c.self_check if c.self_check is not None else 1.0)
        return (
            f"every informative {family} cell failed the self-check or lacks power ({len(failed)} failed; "
            f"{worst.attack} x {worst.probe}: the original kept {worst.self_check:.2f} of its own knowledge)"
        )
    return f"no informative {family} cell with the power to show removal"


def coverage_gaps(cells: list[Cell], policy: Policy, past_output_probes: frozenset[str]) -> list[str]:
    """What the plan lacks for REMOVED: a covering cell (self-checked evidence with power) of each attack family
    it ran and of each required one, and one of a probe that looks past the model's output."""
    families = sorted({c.family for c in cells if c.family != NO_ATTACK} | set(policy.required_families))
    gaps = [
        f"REMOVED needs a self-checked, powered {family} cell: " + _family_gap(family, cells, policy)
        for family in families
        if not any(c.family == family and _covers(c, policy) for c in cells)
    ]
    if policy.past_output_probe and not any(c.probe in past_output_probes and _covers(c, policy) for c in cells):
        names = ", ".join(sorted(past_output_probes)) or "none in the plan"
        gaps.append(f"REMOVED needs a powered cell of a probe that looks past the model's output ({names})")
    return gaps


def decide(cells: list[Cell], policy: Policy, collateral: float | None, roles: ProbeRoles) -> Verdict:
    """The verdict, the cells that decided it, and whether the gate passes; ``roles`` says which of the plan's
    probes ask directly (the direct cell) and which look past the model's output (coverage)."""
    usable = [c for c in cells if evidence(c, policy)]
    direct = direct_cell(usable, lambda c: (c.attack, c.probe), roles.direct)
    label: Label = "INCONCLUSIVE"
    deciding: list[Cell] = []
    reasons: list[str] = []
    if direct is None:
        names = " or ".join(roles.direct) or "direct probe"
        reasons.append(f"no informative none x {names} cell (too few items, or the original does not know more)")
    elif (direct.residual or 0.0) > policy.thresholds.not_unlearned:
        label, deciding = "NOT_UNLEARNED", [direct]
        reasons.append(_describe(direct) + f", above {policy.thresholds.not_unlearned}")
    else:
        hidden = [c for c in usable if c is not direct and low(c) > policy.for_cell(c.attack, c.probe).hidden]
        if hidden:
            label, deciding = "HIDDEN", hidden
            reasons += [
                _describe(c) + f", lower bound above {policy.for_cell(c.attack, c.probe).hidden}" for c in hidden
            ]
        elif all(high(c) < policy.for_cell(c.attack, c.probe).removed for c in usable):
            gaps = coverage_gaps(cells, policy, roles.past_output)
            if gaps:
                reasons += gaps
            else:
                label = "REMOVED"
                reasons.append(f"all {len(usable)} informative cells have upper bounds below their removal thresholds")
        else:
            deciding = certified_bound(cells, policy)[1]
            reasons += [_limit_reason(c, policy) for c in deciding]
            reasons += coverage_gaps(cells, policy, roles.past_output)
    failures = []
    if label in policy.fail_on:
        failures.append(f"verdict {label} fails the gate")
    if collateral is not None and collateral_failed(collateral, policy):
        failures.append(f"collateral damage {collateral:.1%} exceeds {policy.collateral_limit:.0%}")
    bound, limiting = certified_bound(cells, policy)
    return Verdict(
        label=label,
        deciding_cells=tuple((c.attack, c.probe) for c in deciding),
        reasons=tuple(reasons),
        collateral=collateral,
        gate_passed=not failures,
        failures=tuple(failures),
        exit_code=exit_code(label, not failures),
        certified_bound=None if bound is None else round(bound, 6),
        limiting_cells=tuple((c.attack, c.probe) for c in limiting),
        direct_cell=None if direct is None else (direct.attack, direct.probe),
    )


def exit_code(label: str, gate_passed: bool) -> int:
    """0 passed, 1 the gate failed, 3 passed but inconclusive."""
    if not gate_passed:
        return EXIT_GATE_FAILED
    return EXIT_INCONCLUSIVE if label == "INCONCLUSIVE" else EXIT_PASS


def close_gate(verdict: Verdict, policy: Policy, traces: list[dict], regressions: list[str]) -> Verdict:
    """The verdict with every gate failure: its own, unlearning traces (policy ``fail``) and baseline regressions."""
    failures = list(verdict.failures)
    if traces and policy.unlearning_trace == "fail":
        failures.append(f"unlearning trace in {len(traces)} membership cell(s) fails the gate")
    failures += [f"regression: {line}" for line in regressions]
    passed = not failures
    return replace(verdict, failures=tuple(failures), gate_passed=passed, exit_code=exit_code(verdict.label, passed))


def _limit_reason(cell: Cell, policy: Policy) -> str:
    removed = policy.for_cell(cell.attack, cell.probe).removed
    if cell_outcome(cell, policy) == "underpowered":
        return (
            _describe(cell) + f": underpowered, even a zero residual would reach {cell.zero_bound:.2f} (>= {removed})"
        )
    return _describe(cell) + ": interval reaches the removal threshold"


@dataclass
class Regression:
    rose: list[str] = field(default_factory=list)
    compared: int = 0


def compare_to_baseline(cells: list[dict], baseline: dict, policy: Policy) -> Regression:
    """Cells whose residual rose against the baseline: beyond the tolerance, or outside both intervals."""
    before = {(c["attack"], c["probe"]): c for c in baseline.get("cells", [])}
    out = Regression()
    for cell in cells:
        old = before.get((cell["attack"], cell["probe"]))
        if old is None or cell["residual"] is None or old.get("residual") is None:
            continue
        out.compared += 1
        if policy.regression_tolerance is not None:
            rose = cell["residual"] - old["residual"] > float(policy.regression_tolerance)
        else:
            rose = cell["ci_low"] > old["ci_high"]
        if rose:
            out.rose.append(f"{cell['attack']} x {cell['probe']}: {old['residual']:.2f} -> {cell['residual']:.2f}")
    return out
