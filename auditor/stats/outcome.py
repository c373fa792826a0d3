"""Each cell on its own: whether it may count, what it shows, how it stands against the gate, its power.

With ``auditor.stats.gate`` (the verdict), the only place that compares a
figure with a threshold. A cell is informative when it was measured on enough
items where the original knew more than the floor; it is evidence when its
attack also passed the self-check: the original, attacked the same way, kept
its own residual within the policy's tolerance of 1.
"""

from __future__ import annotations

import math

from auditor.stats.policy import Policy
from auditor.types import NO_ATTACK, Cell, Verdict


def informative(cell: Cell, policy: Policy) -> bool:
    """Whether a cell may decide the verdict: it was measured, on enough items, where the original knew more."""
    if cell.status != "ok" or cell.residual is None or cell.ci_low is None or cell.ci_high is None:
        return False
    if cell.n_items < policy.min_items or cell.k_original is None or cell.k_reference is None:
        return False
    return cell.k_original - cell.k_reference >= policy.min_gap


def low(cell: Cell) -> float:
    """The lower bound of an informative cell."""
    assert cell.ci_low is not None
    return cell.ci_low


def high(cell: Cell) -> float:
    """The upper bound of an informative cell."""
    assert cell.ci_high is not None
    return cell.ci_high


def passes_self_check(value: float | None, policy: Policy) -> bool:
    """Whether the original's own residual under an attack (None: none measured, no attack) is within the
    policy's tolerance of 1."""
    return value is None or abs(value - 1.0) <= policy.self_check_tolerance + 1e-9  # 1.1 is within 0.1 of 1


def evidence(cell: Cell, policy: Policy) -> bool:
    """Whether a cell may decide the verdict: informative, and its attack passed the self-check."""
    return informative(cell, policy) and passes_self_check(cell.self_check, policy)


def cell_outcome(cell: Cell, policy: Policy) -> str:
    """What one cell shows: recovered, clean, underpowered, unclear, self-check failed, uninformative or
    skipped."""
    if cell.status != "ok":
        return "skipped"
    if not informative(cell, policy):
        return "uninformative"
    if not passes_self_check(cell.self_check, policy):
        return "self-check failed"
    t = policy.for_cell(cell.attack, cell.probe)
    if low(cell) > t.hidden:
        return "recovered"
    if high(cell) < t.removed:
        return "clean"
    if underpowered(cell, t.removed):
        return "underpowered"
    return "unclear"


def cell_gate(outcome: str, deciding: bool, verdict: Verdict, policy: Policy) -> str:
    """How a cell stands against the gate: failed when it decided a failing verdict, or recovered knowledge and
    the policy fails on HIDDEN; passed when clean (or recovered where HIDDEN passes); skipped (and fallback) cells
    count for nothing; anything else is inconclusive."""
    if outcome == "skipped":
        return "skipped"
    if deciding and verdict.label in policy.fail_on:
        return "failed"
    if outcome == "recovered":
        return "failed" if "HIDDEN" in policy.fail_on else "passed"
    return "passed" if outcome == "clean" else "inconclusive"


def underpowered(cell: Cell, removed: float) -> bool:
    """Whether even a zero residual would give the cell an upper bound at or above the removal threshold."""
    return cell.zero_bound is not None and cell.zero_bound >= removed


def power_records(cells: list[Cell], policy: Policy) -> list[dict]:
    """Per informative plain cell: the bound a zero residual would reach, whether that is underpowered, and the
    items (subjects) that would bring it under the removal threshold, as the spread shrinks with the square root
    of the count."""
    records = []
    for cell in cells:
        if cell.attack != NO_ATTACK or cell.zero_bound is None or not informative(cell, policy):
            continue
        removed = policy.for_cell(cell.attack, cell.probe).removed
        scale = (cell.zero_bound / removed) ** 2
        subjects = cell.n_subjects
        records.append(
            {
                "probe": cell.probe,
                "zero_bound": cell.zero_bound,
                "threshold": removed,
                "underpowered": underpowered(cell, removed),
                "n_items": cell.n_items,
                "n_subjects": subjects,
                "items_needed": max(cell.n_items, math.ceil(cell.n_items * scale)),
                "subjects_needed": None if subjects is None else max(subjects, math.ceil(subjects * scale)),
            }
        )
    return records


def collateral_failed(drop: float, policy: Policy) -> bool:
    """Whether the relative drop of retain knowledge exceeds the policy's limit."""
    return drop > policy.collateral_limit


def unlearning_traces(cells: list[Cell], membership_probes: frozenset[str] | set[str], policy: Policy) -> list[dict]:
    """Membership cells where the forget items stand out as *less* likely than non-members.

    The original shows members as more likely (the cell is informative); the
    unlearned model, attacked or not, lies below its floor by more than
    ``min_gap``: the forget set can be told apart by what unlearning did to it
    (MUSE's PrivLeak counts this too). A finding of its own: the residual is
    clipped at 0, so it never makes a verdict HIDDEN.
    """
    traces = []
    for cell in cells:
        if cell.probe not in membership_probes or not informative(cell, policy):
            continue
        floor = cell.k_reference_attacked if cell.k_reference_attacked is not None else cell.k_reference
        if floor is not None and cell.k_unlearned is not None and floor - cell.k_unlearned > policy.min_gap:
            traces.append(
                {
                    "attack": cell.attack,
                    "probe": cell.probe,
                    "k_unlearned": cell.k_unlearned,
                    "k_floor": floor,
                    "below_floor": round(floor - cell.k_unlearned, 6),
                }
            )
    return traces
