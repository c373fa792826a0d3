"""Scores, plan, policy and baseline -> one judgement, the only stage that judges.

Every comparison of a figure with a threshold lives in ``auditor.stats.outcome``
(each cell) and ``auditor.stats.gate`` (the verdict); this module asks them
once per audit, in order: the self-check of every configuration, the adaptive
searches (which need the self-checks), the cells, each cell's outcome and
standing against the gate, the verdict with its coverage, the unlearning
traces, the baseline regressions and the recovered items. ``results.json``
records the judgement, and the reports and the leaderboard only read it. The
power lines printed mid-run are the same judgement of the plain cells
(``judge_plain``), and those cells are not bootstrapped again at the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from auditor.engine.adaptive import search_records, subject_halves
from auditor.engine.cells import build_cells, collateral_record, plain_cells, self_checks
from auditor.engine.findings import recovered_items, recovery_curves
from auditor.engine.records import AuditConfig, AuditScores
from auditor.stats.gate import Regression, close_gate, compare_to_baseline, decide
from auditor.stats.outcome import cell_gate, cell_outcome, passes_self_check, power_records, unlearning_traces
from auditor.stats.policy import Policy, Thresholds
from auditor.types import NO_ATTACK, AuditData, Cell, Verdict


@dataclass(frozen=True)
class JudgedCell:
    """A cell with the thresholds it was judged by, what it shows, and how it stands against the gate."""

    cell: Cell
    thresholds: Thresholds
    outcome: str  # recovered, clean, underpowered, unclear, self-check failed, uninformative, skipped
    gate: str  # passed, failed, inconclusive, skipped


@dataclass(frozen=True)
class Judgement:
    """Everything an audit concluded from its scores."""

    cells: tuple[JudgedCell, ...]
    verdict: Verdict
    collateral: dict
    power: list[dict]
    traces: list[dict]
    regression: Regression | None
    recovered: list[dict]
    searches: list[dict]
    curves: list[dict]

    @property
    def resampling(self) -> str:
        """Subjects when any cell resampled whole subjects, else items."""
        return "subjects" if any(j.cell.n_subjects for j in self.cells) else "items"


def judge_plain(scores: AuditScores, config: AuditConfig, policy: Policy) -> tuple[list[Cell], list[dict]]:
    """The plain cells (the models as given) and their power, known before any attack runs."""
    cells = plain_cells(scores, config, policy)
    return cells, power_records(cells, policy)


def judge(
    scores: AuditScores,
    config: AuditConfig,
    data: AuditData,
    policy: Policy,
    baseline: dict | None = None,
    plain: list[Cell] | None = None,
) -> Judgement:
    """The judgement of a finished audit; ``plain``: the plain cells ``judge_plain`` already computed. The adaptive
    searches' stitched results are added to ``scores``."""
    checks = self_checks(scores, config)

    def passes(config_id: str, probe: str) -> bool:
        return passes_self_check(checks.get((config_id, probe)), policy)

    searches = search_records(scores, config.plan, passes, checks, subject_halves(data, config.seed))
    cells = build_cells(scores, config, policy, checks, plain)
    collateral = collateral_record(scores, policy, config.seed)
    roles = config.plan.roles()
    traces = unlearning_traces(cells, roles.membership, policy)
    outcomes = [cell_outcome(c, policy) for c in cells]
    regression = compare_to_baseline([asdict(c) for c in cells], baseline, policy) if baseline is not None else None
    verdict = close_gate(
        decide(cells, policy, collateral["drop"], roles), policy, traces, regression.rose if regression else []
    )
    deciding = set(verdict.deciding_cells)
    judged = tuple(
        JudgedCell(
            c, policy.for_cell(c.attack, c.probe), o, cell_gate(o, (c.attack, c.probe) in deciding, verdict, policy)
        )
        for c, o in zip(cells, outcomes, strict=True)
    )
    return Judgement(
        cells=judged,
        verdict=verdict,
        collateral=collateral,
        power=power_records([c for c in cells if c.attack == NO_ATTACK], policy),
        traces=traces,
        regression=regression,
        recovered=recovered_items(scores, cells, dict(zip(map(id, cells), outcomes, strict=True)), roles.membership),
        searches=searches,
        curves=recovery_curves(cells, config),
    )
