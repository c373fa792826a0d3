"""The adaptive adversary: per search and probe, the configuration each model is attacked with, chosen on one
half of the subjects and scored on the other.

Reporting the best of many configurations scored on the items it was chosen on
would overstate what an attack recovers (the winner's curse: the maximum of
noisy scores is biased upward). Here each model's configuration is chosen on
one half of the forget subjects (``subject_halves``) and its item scores are
taken on the other half only, and the halves swap (cross-fitting), so every
subject is scored once, by a configuration chosen without it. The resulting
per-item scores (``stitched``) form an ordinary cell with the usual subject
bootstrap.

Each model searches on its own scores: the unlearned model and the reference
get the identical search, each choosing by its own knowledge score, so what a
configuration teaches by itself cancels as it does for a planned attack, and
the reference's pieces stay the same for every audit that shares them. Without
a reference, a model's choice is scored net of its own holdout floor under the
same configuration (the holdout subjects are halved the same way). Only
configurations that passed the self-check on a probe compete for that probe.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from auditor.engine.records import ScoreKey, status_of
from auditor.stats.bootstrap import aggregate
from auditor.stats.residual import FLOORS
from auditor.types import CHANCE_FLOOR, MEMBERSHIP_AGGREGATES, AuditData, ProbeResult

HALVES = (0, 1)
FORGET_SIDE = ("forget", "multihop", "forget_texts")  # item sets about the forget subjects
HOLDOUT_SIDE = ("holdout", "holdout_texts")  # item sets about subjects no model saw


def subject_halves(data: AuditData, seed: int) -> dict[str, int]:
    """Item id -> the half (0 or 1) its subject falls in. The forget side's subjects and the holdout side's are
    each shuffled by ``seed`` and dealt alternately, so both halves hold as many subjects of each side."""
    halves: dict[str, int] = {}
    for side in (FORGET_SIDE, HOLDOUT_SIDE):
        items = [item for name in side if getattr(data, name) is not None for item in getattr(data, name).items]
        keys = sorted({item.key for item in items})
        random.Random(f"subject-halves-{seed}").shuffle(keys)
        half = {key: index % 2 for index, key in enumerate(keys)}
        halves.update({item.id: half[item.key] for item in items})
    return halves


def half_value(result: ProbeResult, half: int, halves: dict[str, int]) -> float:
    """The probe's aggregate over the scored items of one half (members and non-members alike)."""
    scored = [s for s in result.items if s.score is not None and halves.get(s.item_id) == half]
    if not scored:
        return float("nan")
    members = np.asarray([bool(s.member) for s in scored]) if result.aggregate in MEMBERSHIP_AGGREGATES else None
    return aggregate(np.asarray([s.score for s in scored], dtype=float), result.aggregate, members)


def known_floor(result: ProbeResult, half: int, halves: dict[str, int]) -> float | None:
    """The floor a probe has by definition on one half (chance per item, or its aggregate's constant), or None."""
    if result.extras.get("floor") == CHANCE_FLOOR:
        chance = [s.detail["chance"] for s in result.items if s.score is not None and halves.get(s.item_id) == half]
        return float(np.mean(chance)) if chance else None
    return FLOORS.get(result.aggregate)


def stitched(chosen: dict[int, ProbeResult], halves: dict[str, int], label: str) -> ProbeResult:
    """One result from the results chosen on each half: each half's items from the result chosen on the other."""
    items = tuple(s for half, result in chosen.items() for s in result.items if halves.get(s.item_id) == 1 - half)
    first = chosen[HALVES[0]]
    scored = [s for s in items if s.score is not None]
    members = np.asarray([bool(s.member) for s in scored]) if first.aggregate in MEMBERSHIP_AGGREGATES else None
    values = np.asarray([s.score for s in scored], dtype=float)
    value = aggregate(values, first.aggregate, members) if scored else None
    value = None if value is None or not np.isfinite(value) else round(float(value), 6)
    return replace(first, model=label, items=items, value=value)


@dataclass(frozen=True)
class Choice:
    """What one model's search chose for one probe: per half, the configuration chosen there and its score."""

    role: str
    scores: dict[str, list[float | None]]  # configuration id -> selection score on each half
    chosen: tuple[str | None, ...]  # per half: the configuration chosen on it (scored on the other half)

    def to_json(self) -> dict:
        return {"scores": self.scores, "chosen_on_half": list(self.chosen)}


def _finite(x: float) -> float | None:
    return round(float(x), 6) if np.isfinite(x) else None


def choose(
    role: str,
    candidates: list[str],
    attacked: Callable[[str], list[ProbeResult]],
    floor: Callable[[str], list[ProbeResult]] | None,
    halves: dict[str, int],
) -> Choice:
    """The configuration with the highest knowledge score on each half (the earliest, i.e. cheapest, on ties):
    the mean over seeds of the model's aggregate there, net of its holdout floor under the same configuration
    when ``floor`` gives one."""
    scores: dict[str, list[float | None]] = {}
    chosen: list[str | None] = []
    for half in HALVES:
        best, best_value = None, -np.inf
        for config in candidates:
            values = [half_value(r, half, halves) for r in attacked(config)]
            if floor is not None:
                floors = [half_value(r, half, halves) for r in floor(config)]
                values = [v - f for v, f in zip(values, floors, strict=True)]
            value = float(np.mean(values)) if values else float("nan")
            scores.setdefault(config, []).append(_finite(value))
            if np.isfinite(value) and value > best_value:
                best, best_value = config, value
        chosen.append(best)
    return Choice(role, scores, tuple(chosen))


def _skipped_result(template: ProbeResult, label: str, reason: str) -> ProbeResult:
    return replace(template, model=label, value=None, items=(), status="skipped", reason=reason)


NONE_ELIGIBLE = "no configuration passed the self-check and ran on this model"


def cross_fit(search, plan, scores, halves: dict[str, int], passes: Callable[[str, str], bool]) -> dict:
    """Choose each model's configuration per half and probe, put the stitched results under the search's id into
    ``scores`` (and its floors), and return the search's choices per probe: the configurations eligible there
    and each model's selection scores and choices. ``passes(config id, probe)`` says whether a configuration
    passed the self-check on a probe."""
    res, floors = scores.probe_results, scores.floor_results
    seeds = plan.seeds_for(search.planned)
    own_seeds = {c.id: plan.seeds_for(c) for c in search.configs}
    roles = ("unlearned", "reference") if scores.controlled else ("unlearned",)

    def runs(store: dict, role: str, config_id: str, probe: str) -> list[ProbeResult] | None:
        """A configuration's results for each seed of the search (a deterministic one's single run for each),
        or None unless every one ran."""
        own = own_seeds[config_id]
        found = [store.get(ScoreKey(role, config_id, s if s in own else own[0], probe)) for s in seeds]
        ok = [r for r in found if r is not None and r.status == "ok"]
        return ok if len(ok) == len(found) else None

    record: dict = {}
    for probe in (p.name for p in plan.probes):
        template = res[ScoreKey.plain("original", probe)]
        with_floor = not scores.controlled and known_floor(template, HALVES[0], halves) is None
        eligible = [c.id for c in search.configs if passes(c.id, probe)]
        choices = {}
        for role in roles:
            found = {c: runs(res, role, c, probe) for c in eligible}
            found_floor = {c: runs(floors, role, c, probe) for c in eligible} if with_floor else {}
            attacked = {c: r for c, r in found.items() if r is not None}
            floor = {c: r for c, r in found_floor.items() if r is not None}
            ran = [c for c in eligible if c in attacked and (not with_floor or c in floor)]
            choice = choose(role, ran, attacked.__getitem__, floor.__getitem__ if with_floor else None, halves)
            choices[role] = choice.to_json()
            targets = [(res, attacked, "")] + ([(floors, floor, " (holdout floor)")] if with_floor else [])
            for store, chosen_runs, suffix in targets:
                for index, seed in enumerate(seeds):
                    label, key = f"{role}@{search.id}{suffix}", ScoreKey(role, search.id, seed, probe)
                    if None in choice.chosen:
                        store[key] = _skipped_result(template, label, NONE_ELIGIBLE)
                        continue
                    picked = {half: chosen_runs[c][index] for half, c in zip(HALVES, choice.chosen, strict=True)}
                    store[key] = stitched(picked, halves, label)
        record[probe] = {"eligible": eligible, "choices": choices}
    return record


def search_records(
    scores, plan, passes: Callable[[str, str], bool], checks: dict, halves: dict[str, int]
) -> list[dict]:
    """Each search of the plan, cross-fitted (its stitched results go into ``scores``): the configurations it
    tried, their cost, self-check and status per model, where the unlearned model's search stopped, and per
    probe each model's selection scores and choices. ``checks``: the self-check of each (configuration, probe)."""
    records = []
    for search in plan.searches:
        choices = cross_fit(search, plan, scores, halves, passes)
        runs = [scores.attacks.get(c.id, {}) for c in search.configs]
        ran = [bool(r.get("unlearned")) for r in runs]
        stopped = next((search.configs[i - 1].id for i in range(1, len(ran)) if ran[i - 1] and not ran[i]), None)
        records.append(
            {
                "id": search.id,
                "family": search.family,
                "planned": search.planned.id,
                "budget": search.budget,
                "configurations": [
                    {
                        "id": c.id,
                        "cost": cost,
                        "self_check": {p.name: checks.get((c.id, p.name)) for p in plan.probes},
                        "status": {role: status_of(results) for role, results in run.items()},
                        "seconds": {
                            role: sum(r.cost.get("seconds", 0) for r in results) for role, results in run.items()
                        },
                    }
                    for c, cost, run in zip(search.configs, search.costs, runs, strict=True)
                ],
                "tried": len(search.configs),
                "left_out": list(search.left_out),
                "stopped_after": stopped,
                "probes": choices,
            }
        )
    return records
