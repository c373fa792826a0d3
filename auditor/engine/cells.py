"""Probe results -> cells: the residual of every attack x probe with its interval, the collateral damage,
and the power each plain cell gives (what a zero residual would reach)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from auditor.engine.records import AuditConfig, AuditScores, ScoreKey
from auditor.stats.outcome import collateral_failed
from auditor.stats.policy import Policy
from auditor.stats.residual import (
    FLOORS,
    Bootstrap,
    Scores,
    estimate_residual,
    point_residual,
    relative_drop,
)
from auditor.types import CHANCE_FLOOR, MEMBERSHIP_AGGREGATES, NO_ATTACK, Cell, ProbeResult


def _scored(result: ProbeResult) -> dict[str, tuple[float, bool | None]]:
    return {s.item_id: (s.score, s.member) for s in result.items if s.score is not None}


def _stack(results: list[ProbeResult], ids: list[str]) -> np.ndarray:
    maps = [_scored(r) for r in results]
    return np.asarray([[scored[i][0] for i in ids] for scored in maps], dtype=float)


def _common_ids(results: list[ProbeResult]) -> list[str]:
    maps = [_scored(r) for r in results]
    return [i for i in maps[0] if all(i in m for m in maps[1:])]


def _subject_labels(scores: AuditScores, ids: list[str]) -> np.ndarray | None:
    """The subject of each item (an item naming none is a subject of its own); None when no item names one."""
    if not any(i in scores.subjects for i in ids):
        return None
    return np.asarray([scores.subjects.get(i, f"item:{i}") for i in ids])


def _skipped_cell(
    attack: str, probe: str, original: ProbeResult, controlled: bool, note: str | None, family: str
) -> Cell:
    return Cell(
        attack=attack,
        probe=probe,
        residual=None,
        ci_low=None,
        ci_high=None,
        k_original=original.value,
        k_unlearned=None,
        k_reference=None,
        k_reference_attacked=None,
        n_items=0,
        controlled=controlled,
        status="skipped",
        note=note,
        family=family,
    )


def _members(result: ProbeResult, ids: list[str], by_membership: bool) -> np.ndarray | None:
    scored = _scored(result)
    return np.asarray([bool(scored[i][1]) for i in ids]) if by_membership else None


def _score_table(
    original: ProbeResult,
    attacked: list[ProbeResult],
    reference: ProbeResult | None,
    reference_attacked: list[ProbeResult],
    scores: AuditScores,
    floor: float | str | None,
) -> Scores:
    """The four models' per-item scores on the items all of them scored (the floor's own items when unpaired).

    ``floor`` is a constant, or ``chance``: each item's chance level (``detail["chance"]``, e.g. 1/k)."""
    paired = scores.controlled
    floors = [reference, *reference_attacked] if reference is not None and floor is None else []
    ids = _common_ids([original, *attacked] + (floors if paired else []))
    by_membership = original.aggregate in MEMBERSHIP_AGGREGATES
    ref_ids = _common_ids(floors) if not paired and floors else []
    floor_ids = ids if paired else ref_ids
    return Scores(
        original=_stack([original], ids)[0],
        unlearned=_stack(attacked, ids),
        reference=(_stack(floors[:1], floor_ids)[0] if floors else None),
        reference_attacked=(_stack(floors[1:], floor_ids) if floors else None),
        members=_members(original, ids, by_membership),
        reference_members=_members(floors[0], ref_ids, by_membership) if ref_ids else None,
        paired=paired,
        floor=_chance(original, ids) if isinstance(floor, str) else floor,
        groups=_subject_labels(scores, ids),
        reference_groups=_subject_labels(scores, ref_ids) if ref_ids else None,
    )


def _chance(result: ProbeResult, ids: list[str]) -> np.ndarray:
    """Each item's chance level, from its detail."""
    chance = {s.item_id: s.detail["chance"] for s in result.items}
    return np.asarray([chance[i] for i in ids], dtype=float)


def _constant_floor(result: ProbeResult) -> float | str | None:
    """The floor a probe's result has by definition, with no reference: AUC 0.5, a gap 0, or each item's chance."""
    return CHANCE_FLOOR if result.extras.get("floor") == CHANCE_FLOOR else FLOORS.get(result.aggregate)


def _inputs(
    attack: str, probe: str, scores: AuditScores, seeds: Sequence[int | None], role: str
) -> tuple[ProbeResult, Scores | str]:
    """The original's result and the four models' score table of one cell (``role`` in the unlearned model's
    place), or the original's result and why the cell cannot be computed."""
    res, floors = scores.probe_results, scores.floor_results
    attacked = [res[ScoreKey(role, attack, s, probe)] for s in seeds]
    original = res[ScoreKey.plain("original", probe)]
    reference: ProbeResult | None
    if scores.controlled:
        reference = res[ScoreKey.plain("reference", probe)]
        reference_attacked = [res[ScoreKey("reference", attack, s, probe)] for s in seeds]
    else:
        reference = floors.get(ScoreKey.plain("original", probe))
        found = [floors.get(ScoreKey(role, attack, s, probe)) for s in seeds]
        reference_attacked = [r for r in found if r is not None]
        if _constant_floor(original) is not None:  # no holdout needed: the floor is known
            reference, reference_attacked = None, []
    everything = [original, *attacked] + ([reference, *reference_attacked] if reference else [])
    skipped = next((r for r in everything if r is not None and r.status == "skipped"), None)
    if skipped is not None:
        return original, skipped.reason or "skipped"
    floor = _constant_floor(original) if not scores.controlled else None
    missing_floor = reference is None or len(reference_attacked) < len(seeds)
    if not scores.controlled and floor is None and missing_floor:
        return original, "no reference model and no holdout counterpart for this probe"
    table = _score_table(original, attacked, reference, reference_attacked, scores, floor)
    if not table.original.size:
        return original, "no item could be scored on every model"
    return original, table


def _cell(
    attack: str,
    probe: str,
    scores: AuditScores,
    seeds: Sequence[int | None],
    seed: int,
    boot: Bootstrap,
    family: str = NO_ATTACK,
    self_check: float | None = None,
) -> Cell:
    original, table = _inputs(attack, probe, scores, seeds, "unlearned")
    if isinstance(table, str):
        return _skipped_cell(attack, probe, original, scores.controlled, table, family)
    est = estimate_residual(table, original.aggregate, seed, boot)
    note = None if est.residual is not None else "uninformative: the original knows no more than the floor"
    return Cell(
        attack=attack,
        probe=probe,
        residual=est.residual,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        k_original=round(est.k_original, 6),
        k_unlearned=round(est.k_unlearned, 6),
        k_reference=round(est.k_reference, 6),
        k_reference_attacked=round(est.k_reference_attacked, 6),
        n_items=int(table.original.size),
        controlled=scores.controlled,
        note=note,
        n_subjects=None if table.groups is None else len(set(table.groups.tolist())),
        zero_bound=est.zero_bound,
        family=family,
        self_check=self_check,
    )


def self_check(attack: str, probe: str, scores: AuditScores, seeds: Sequence[int | None]) -> float | None:
    """The original audited against itself: its own residual under ``attack`` on ``probe``, unclipped (its
    attacked knowledge over its attacked floor, against its plain knowledge over its plain floor). 1 means the
    attack kept what it knew; None when it cannot be measured (skipped, or nothing over the floor)."""
    if any(ScoreKey("original", attack, s, probe) not in scores.probe_results for s in seeds):
        return None
    original, table = _inputs(attack, probe, scores, seeds, "original")
    if isinstance(table, str):
        return None
    value = point_residual(table, original.aggregate)
    return None if value is None else round(value, 6)


def self_checks(scores: AuditScores, config: AuditConfig) -> dict[tuple[str, str], float | None]:
    """The self-check of every configuration the plan ran, on every probe."""
    plan = config.plan
    return {
        (planned.id, probe.name): self_check(planned.id, probe.name, scores, list(plan.seeds_for(planned)))
        for planned in plan.configurations()
        for probe in plan.probes
    }


def build_cells(
    scores: AuditScores,
    config: AuditConfig,
    policy: Policy,
    checks: dict[tuple[str, str], float | None],
    plain: list[Cell] | None = None,
) -> list[Cell]:
    """One cell per attack (``none``, each planned attack, each search) and probe; ``checks`` holds the
    self-check of each (configuration, probe), ``scores`` the stitched results of each search, ``plain`` the
    plain cells when already computed."""
    plan, boot = config.plan, policy.bootstrap
    cells = list(plain) if plain is not None else plain_cells(scores, config, policy)
    families = plan.families()
    for planned in plan.attacks:
        seeds = list(plan.seeds_for(planned))
        for probe in plan.probes:
            check = checks.get((planned.id, probe.name))
            cells.append(_cell(planned.id, probe.name, scores, seeds, config.seed, boot, families[planned.id], check))
    for search in plan.searches:
        seeds = list(plan.seeds_for(search.planned))
        for probe in plan.probes:
            cells.append(_cell(search.id, probe.name, scores, seeds, config.seed, boot, search.family))
    return cells


def plain_cells(scores: AuditScores, config: AuditConfig, policy: Policy) -> list[Cell]:
    """The cells of the models as given (attack ``none``): known once the first probes have run."""
    boot = policy.bootstrap
    return [_cell(NO_ATTACK, probe.name, scores, [None], config.seed, boot) for probe in config.plan.probes]


def power_lines(records: list[dict]) -> list[str]:
    """``power_records`` as log lines."""
    lines = []
    for r in records:
        count = f"{r['n_items']} items" + (f", {r['n_subjects']} subjects" if r["n_subjects"] else "")
        line = f"power: {r['probe']}: a zero residual would reach an upper bound of {r['zero_bound']:.2f} ({count})"
        if r["underpowered"]:
            more = f"{r['subjects_needed']} subjects" if r["subjects_needed"] else f"{r['items_needed']} items"
            line += f"; under {r['threshold']:g} needs about {more}: cells of this probe are underpowered"
        lines.append(line)
    return lines


def collateral_record(scores: AuditScores, policy: Policy, seed: int) -> dict:
    o, u = scores.collateral["original"], scores.collateral["unlearned"]
    ids = _common_ids([o, u])
    subjects = _subject_labels(scores, ids)
    drop, low, high = relative_drop(_stack([o], ids)[0], _stack([u], ids)[0], seed, subjects, policy.bootstrap)
    return {
        "probe": o.probe,
        "n": len(ids),
        "n_subjects": None if subjects is None else len(set(subjects.tolist())),
        "k_original": o.value,
        "k_unlearned": u.value,
        "drop": round(drop, 6),
        "ci_low": round(low, 6),
        "ci_high": round(high, 6),
        "limit": policy.collateral_limit,
        "failed": collateral_failed(drop, policy),
    }
