"""Scores -> cells, verdict and the versioned ``results.json`` record (plus per-item samples)."""

from __future__ import annotations

import json
import math
import platform
import re
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from auditor import __version__
from auditor.engine.orchestrator import AuditConfig, AuditScores
from auditor.files import write_text_atomic
from auditor.stats.gate import (
    Policy,
    cell_outcome,
    close_gate,
    compare_to_baseline,
    decide,
    informative,
    unlearning_traces,
)
from auditor.stats.residual import (
    CONFIDENCE,
    FLOORS,
    MEMBERSHIP_AGGREGATES,
    N_RESAMPLES,
    Scores,
    estimate_residual,
    relative_drop,
)
from auditor.types import DIRECT_PROBE, NO_ATTACK, AuditData, Cell, ProbeResult
from reports.schema import SCHEMA_VERSION

PACKAGES = ("torch", "transformers", "peft", "datasets", "scikit-learn", "scipy", "bitsandbytes", "gptqmodel")
MAX_RECOVERED = 40
MAX_RECOVERED_PER_CELL = 8  # so that every recovering cell, membership ones included, shows some items


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


def _skipped_cell(attack: str, probe: str, original: ProbeResult, controlled: bool, note: str | None) -> Cell:
    return Cell(attack, probe, None, None, None, original.value, None, None, None, 0, controlled, "skipped", note)


def _cell(attack: str, probe: str, scores: AuditScores, seeds: list[int | None], seed: int) -> Cell:
    res, floors = scores.probe_results, scores.floor_results
    attacked = [res[("unlearned", attack, s, probe)] for s in seeds]
    original = res[("original", NO_ATTACK, None, probe)]
    if scores.controlled:
        reference = res[("reference", NO_ATTACK, None, probe)]
        reference_attacked = [res[("reference", attack, s, probe)] for s in seeds]
    else:
        reference = floors.get(("original", NO_ATTACK, None, probe))
        reference_attacked = [floors.get(("unlearned", attack, s, probe)) for s in seeds]
        if original.aggregate in FLOORS:  # membership aggregates have a floor by definition (AUC 0.5, gap 0)
            reference, reference_attacked = None, []
    everything = [original, *attacked] + ([reference, *reference_attacked] if reference else [])
    skipped = next((r for r in everything if r is not None and r.status == "skipped"), None)
    aggregate = original.aggregate
    if skipped is not None:
        return _skipped_cell(attack, probe, original, scores.controlled, skipped.reason)
    floor = FLOORS.get(aggregate) if not scores.controlled else None
    if not scores.controlled and floor is None and (reference is None or None in reference_attacked):
        return _skipped_cell(
            attack, probe, original, False, "no reference model and no holdout counterpart for this probe"
        )
    paired = scores.controlled
    ids = _common_ids([original, *attacked] + ([reference, *reference_attacked] if paired else []))
    by_membership = aggregate in MEMBERSHIP_AGGREGATES
    original_scored = _scored(original)
    members = np.asarray([bool(original_scored[i][1]) for i in ids]) if by_membership else None
    ref_ids = _common_ids([reference, *reference_attacked]) if not paired and floor is None else []
    ref_members = None
    if ref_ids and by_membership:
        reference_scored = _scored(reference)
        ref_members = np.asarray([bool(reference_scored[i][1]) for i in ref_ids])
    table = Scores(
        original=_stack([original], ids)[0],
        unlearned=_stack(attacked, ids),
        reference=(_stack([reference], ids if paired else ref_ids)[0] if floor is None else None),
        reference_attacked=(_stack(reference_attacked, ids if paired else ref_ids) if floor is None else None),
        members=members,
        reference_members=ref_members,
        paired=paired,
        floor=floor,
        groups=_subject_labels(scores, ids),
        reference_groups=_subject_labels(scores, ref_ids) if ref_ids else None,
    )
    if not ids:
        return _skipped_cell(attack, probe, original, scores.controlled, "no item could be scored on every model")
    est = estimate_residual(table, aggregate, seed)
    note = None if est.residual is not None else "uninformative: the original knows no more than the floor"
    return Cell(
        attack,
        probe,
        est.residual,
        est.ci_low,
        est.ci_high,
        round(est.k_original, 6),
        round(est.k_unlearned, 6),
        round(est.k_reference, 6),
        round(est.k_reference_attacked, 6),
        n_items=len(ids),
        controlled=scores.controlled,
        note=note,
        n_subjects=None if table.groups is None else len(set(table.groups.tolist())),
        zero_bound=est.zero_bound,
    )


def build_cells(scores: AuditScores, config: AuditConfig) -> list[Cell]:
    """One cell per attack (including ``none``) and probe."""
    plan = config.plan
    cells = []
    for probe in plan.probes:
        cells.append(_cell(NO_ATTACK, probe.name, scores, [None], config.seed))
    for planned in plan.attacks:
        for probe in plan.probes:
            cells.append(_cell(planned.id, probe.name, scores, list(plan.seeds_for(planned)), config.seed))
    return cells


def plain_cells(scores: AuditScores, config: AuditConfig) -> list[Cell]:
    """The cells of the models as given (attack ``none``): known once the first probes have run."""
    return [_cell(NO_ATTACK, probe.name, scores, [None], config.seed) for probe in config.plan.probes]


def power_records(cells: list[Cell], policy: Policy) -> list[dict]:
    """Per informative plain cell: the bound a zero residual would reach, and the items (subjects) that would
    bring it under the removal threshold, as the spread shrinks with the square root of the count."""
    records = []
    for cell in cells:
        if cell.attack != NO_ATTACK or cell.zero_bound is None or not informative(cell, policy):
            continue
        removed = policy.for_cell(cell.attack, cell.probe).removed
        scale = (cell.zero_bound / removed) ** 2
        record = {"probe": cell.probe, "zero_bound": cell.zero_bound, "threshold": removed, "n_items": cell.n_items}
        record["n_subjects"] = cell.n_subjects
        record["items_needed"] = max(cell.n_items, math.ceil(cell.n_items * scale))
        subjects = cell.n_subjects
        record["subjects_needed"] = None if subjects is None else max(subjects, math.ceil(subjects * scale))
        records.append(record)
    return records


def power_lines(records: list[dict]) -> list[str]:
    """``power_records`` as log lines."""
    lines = []
    for r in records:
        count = f"{r['n_items']} items" + (f", {r['n_subjects']} subjects" if r["n_subjects"] else "")
        line = f"power: {r['probe']}: a zero residual would reach an upper bound of {r['zero_bound']:.2f} ({count})"
        if r["zero_bound"] >= r["threshold"]:
            more = f"{r['subjects_needed']} subjects" if r["subjects_needed"] else f"{r['items_needed']} items"
            line += f"; under {r['threshold']:g} needs about {more}: cells of this probe are underpowered"
        lines.append(line)
    return lines


def collateral_record(scores: AuditScores, policy: Policy, seed: int) -> dict:
    o, u = scores.collateral["original"], scores.collateral["unlearned"]
    ids = _common_ids([o, u])
    subjects = _subject_labels(scores, ids)
    drop, low, high = relative_drop(_stack([o], ids)[0], _stack([u], ids)[0], seed, subjects)
    return {
        "probe": DIRECT_PROBE,
        "n": len(ids),
        "n_subjects": None if subjects is None else len(set(subjects.tolist())),
        "k_original": o.value,
        "k_unlearned": u.value,
        "drop": round(drop, 6),
        "ci_low": round(low, 6),
        "ci_high": round(high, 6),
        "limit": policy.collateral_limit,
        "failed": bool(drop > policy.collateral_limit),
    }


def _moved_back(attacked: float, plain: float, original: float | None, membership: bool) -> bool:
    """Whether an attack brought an item back: half the way to the original for a membership statistic (in its
    own units), half a point of the probe's score otherwise (a correct answer is 1)."""
    if membership:
        return original is not None and original > plain and attacked - plain >= 0.5 * (original - plain)
    return attacked - plain >= 0.5


def _shown(score, membership: bool) -> str | None:
    """What an item column shows: the model's output, or for a membership probe its statistic."""
    if score is None:
        return None
    if membership:
        return None if score.score is None else f"{score.score:.3f}"
    return score.detail.get("output")


def _recovered_items(scores: AuditScores, cells: list[Cell], policy: Policy, membership: set[str]) -> list[dict]:
    """Items the plain unlearned model missed but an attack brought back (and the attacked reference did not),
    from the cells that recovered knowledge, then from those whose interval reaches it (unclear)."""
    out: list[dict] = []
    res = scores.probe_results
    outcomes = {id(cell): cell_outcome(cell, policy) for cell in cells}
    candidates = [c for c in cells if c.attack != NO_ATTACK and outcomes[id(c)] in ("recovered", "unclear")]
    for cell in sorted(candidates, key=lambda c: outcomes[id(c)] != "recovered"):
        is_membership = cell.probe in membership
        plain = {s.item_id: s for s in res[("unlearned", NO_ATTACK, None, cell.probe)].items}
        original = {s.item_id: s for s in res[("original", NO_ATTACK, None, cell.probe)].items}
        seed = next(k[2] for k in res if k[0] == "unlearned" and k[1] == cell.attack)
        attacked = res[("unlearned", cell.attack, seed, cell.probe)]
        ref_key = ("reference", cell.attack, seed, cell.probe)
        ref_attacked = {s.item_id: s for s in res[ref_key].items} if ref_key in res else {}
        from_cell = 0
        for item in attacked.items:
            if from_cell >= MAX_RECOVERED_PER_CELL:
                break
            before, source = plain.get(item.item_id), original.get(item.item_id)
            if item.score is None or before is None or before.score is None or item.member is False:
                continue
            if not _moved_back(item.score, before.score, source.score if source else None, is_membership):
                continue
            outputs = {
                "original": _shown(source, is_membership),
                "unlearned": _shown(before, is_membership),
                "attacked": _shown(item, is_membership),
                "reference_attacked": _shown(ref_attacked.get(item.item_id), is_membership),
            }
            out.append(
                {
                    "attack": cell.attack,
                    "probe": cell.probe,
                    "cell_outcome": outcomes[id(cell)],
                    "item_id": item.item_id,
                    "prompt": item.detail.get("prompt"),
                    "expected": item.detail.get("answer"),
                    "outputs": outputs,
                }
            )
            from_cell += 1
            if len(out) >= MAX_RECOVERED:
                return out
    return out


def _curves(cells: list[Cell], config: AuditConfig) -> list[dict]:
    """Residual against a numeric parameter, for attacks planned at several values of one parameter."""
    by_name: dict[str, list] = {}
    for planned in config.plan.attacks:
        by_name.setdefault(planned.attack.name, []).append(planned)
    curves = []
    for name, group in by_name.items():
        if len(group) < 2:
            continue
        varying = [
            k
            for k, v in group[0].attack.params.items()
            if isinstance(v, int | float)
            and not isinstance(v, bool)
            and len({p.attack.params[k] for p in group}) == len(group)
        ]
        if not varying:
            continue
        param = varying[0]
        for probe in config.plan.probes:
            points = []
            for planned in sorted(group, key=lambda p: p.attack.params[param]):
                cell = next(c for c in cells if c.attack == planned.id and c.probe == probe.name)
                if cell.residual is not None:
                    points.append(
                        {
                            "x": planned.attack.params[param],
                            "attack": planned.id,
                            "residual": cell.residual,
                            "ci_low": cell.ci_low,
                            "ci_high": cell.ci_high,
                        }
                    )
            if len(points) >= 2:
                curves.append(
                    {"name": f"{name}: recovery vs {param}", "probe": probe.name, "x_label": param, "points": points}
                )
    return curves


def environment() -> dict:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            continue
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "packages": packages,
    }


def build_results(
    config: AuditConfig,
    data: AuditData,
    scores: AuditScores,
    policy: Policy,
    command: str,
    options: dict,
    baseline: dict | None = None,
    seconds: float | None = None,
    phases: list[dict] | None = None,
) -> dict:
    """The whole record of an audit, as ``results.json`` holds it; ``phases`` from ``PhaseRecorder.to_json``."""
    cells = build_cells(scores, config)
    collateral = collateral_record(scores, policy, config.seed)
    cell_dicts = [
        {**asdict(c), "thresholds": asdict(policy.for_cell(c.attack, c.probe)), "outcome": cell_outcome(c, policy)}
        for c in cells
    ]
    membership = {p.name for p in config.plan.probes if p.aggregate in MEMBERSHIP_AGGREGATES}
    traces = unlearning_traces(cells, membership, policy)
    regression = compare_to_baseline(cell_dicts, baseline, policy) if baseline is not None else None
    verdict = close_gate(
        decide(cells, policy, collateral["drop"]), policy, traces, regression.rose if regression else []
    )
    specs = {"original": config.original, "unlearned": config.unlearned, "reference": config.reference}
    probe_meta = {p.name: p for p in config.plan.probes}
    results = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "unlearn-audit", "version": __version__},
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "config": options,
        "environment": environment(),
        "models": {
            role: ({"spec": spec.label, "fingerprint": scores.fingerprints[role]} if spec else None)
            for role, spec in specs.items()
        },
        "data": {
            name: {
                "source": getattr(data, name).source,
                "n": len(getattr(data, name)),
                "fingerprint": getattr(data, name).fingerprint,
            }
            for name in data.available()
        },
        "controlled": scores.controlled,
        "attacks": _attack_records(config, scores),
        "probes": [_probe_record(p, scores) for p in probe_meta.values()],
        "scores": _score_records(scores),
        "cells": cell_dicts,
        "statistics": {
            "resampling": "subjects" if any(c.n_subjects for c in cells) else "items",
            "n_resamples": N_RESAMPLES,
            "confidence": CONFIDENCE,
            "power": power_records(cells, policy),
        },
        "collateral": collateral,
        "unlearning_trace": {"policy": policy.unlearning_trace, "cells": traces},
        "verdict": asdict(verdict),
        "policy": policy.to_dict(),
        "baseline": _baseline_record(baseline, regression),
        "recovered_items": _recovered_items(scores, cells, policy, membership),
        "curves": _curves(cells, config),
        "samples_dir": "samples",
        "timings": {"total_seconds": round(seconds, 1) if seconds is not None else None},
        "phases": phases or [],
    }
    return json.loads(json.dumps(results, default=str))  # plain JSON types: what results.json will hold


def _baseline_record(baseline: dict | None, regression) -> dict | None:
    if baseline is None:
        return None
    return {
        "source": str(baseline.get("_source", "baseline")),
        "label": baseline.get("verdict", {}).get("label"),
        "passed": not regression.rose,
        "regressions": regression.rose,
        "compared": regression.compared,
    }


def _attack_records(config: AuditConfig, scores: AuditScores) -> list[dict]:
    records = [
        {
            "id": NO_ATTACK,
            "attack": NO_ATTACK,
            "params": {},
            "tier": "none",
            "status": "ok",
            "reason": None,
            "applied": {},
            "cost": {},
            "summary": "no attack: the model as given",
        }
    ]
    for planned in config.plan.attacks:
        per_role = scores.attacks[planned.id]
        first = per_role["unlearned"][0]
        statuses = {r.status for results in per_role.values() for r in results}
        status = "skipped" if statuses == {"skipped"} else ("fallback" if "fallback" in statuses else "ok")
        records.append(
            {
                "id": planned.id,
                "attack": planned.attack.name,
                "params": planned.attack.params,
                "tier": planned.attack.tier,
                "status": status,
                "reason": first.reason,
                "applied": first.applied,
                "cost": first.cost,
                "summary": planned.attack.summary,
                "seeds": list(config.plan.seeds_for(planned)),
                "targets": {
                    role: {"variants": [asdict(v) for r in results for v in r.variants]}
                    for role, results in per_role.items()
                },
            }
        )
    return records


def _probe_record(probe, scores: AuditScores) -> dict:
    result = scores.probe_results[("original", NO_ATTACK, None, probe.name)]
    return {
        "name": probe.name,
        "metric": result.metric or probe.params.get("metric", ""),
        "aggregate": probe.aggregate,
        "summary": probe.summary,
        "params": probe.params,
    }


def _score_records(scores: AuditScores) -> list[dict]:
    out = []
    for (role, attack, seed, probe), result in scores.probe_results.items():
        out.append(
            {
                "model": role,
                "attack": attack,
                "seed": seed,
                "probe": probe,
                "value": result.value,
                "n": sum(1 for s in result.items if s.score is not None),
                "status": result.status,
                "reason": result.reason,
                "extras": result.extras,
            }
        )
    return out


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def write_samples(out_dir: Path, scores: AuditScores) -> None:
    """``samples/<model>__<attack>__<probe>.jsonl``: per-item records of every probe run."""
    folder = out_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    for (role, attack, seed, probe), result in sorted(scores.probe_results.items(), key=lambda kv: str(kv[0])):
        name = _safe_name(f"{role}__{attack}__{'s' + str(seed) if seed is not None else 'plain'}__{probe}")
        lines = [
            json.dumps(
                {"item_id": s.item_id, "score": s.score, "member": s.member, **s.detail},
                default=str,
                ensure_ascii=False,
            )
            for s in result.items
        ]
        write_text_atomic(folder / f"{name}.jsonl", "\n".join(lines) + ("\n" if lines else ""))
