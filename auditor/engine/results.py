"""Scores -> cells, verdict and the versioned ``results.json`` record (plus per-item samples)."""

from __future__ import annotations

import json
import platform
import re
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from auditor import __version__
from auditor.engine.adaptive import cross_fit, subject_halves
from auditor.engine.cells import build_cells, collateral_record, self_checks
from auditor.engine.findings import recovered_items, recovery_curves
from auditor.engine.orchestrator import AuditConfig, AuditScores
from auditor.files import atomic_write
from auditor.lm.memory import peak_rss
from auditor.stats.gate import (
    cell_outcome,
    close_gate,
    compare_to_baseline,
    decide,
    passes_self_check,
    power_records,
    unlearning_traces,
)
from auditor.stats.policy import Policy
from auditor.stats.residual import (
    CONFIDENCE,
    MEMBERSHIP_AGGREGATES,
    N_RESAMPLES,
)
from auditor.types import NO_ATTACK, AuditData, Cell
from reports.schema import SCHEMA_VERSION

PACKAGES = ("torch", "transformers", "peft", "datasets", "scikit-learn", "scipy", "bitsandbytes", "gptqmodel")


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
    checks = self_checks(scores, config)
    searches = search_records(scores, config, policy, checks, subject_halves(data, config.seed))
    cells = build_cells(scores, config, checks)
    collateral = collateral_record(scores, policy, config.seed)
    cell_dicts = [
        {**asdict(c), "thresholds": asdict(policy.for_cell(c.attack, c.probe)), "outcome": cell_outcome(c, policy)}
        for c in cells
    ]
    membership = {p.name for p in config.plan.probes if p.aggregate in MEMBERSHIP_AGGREGATES}
    traces = unlearning_traces(cells, membership, policy)
    regression = compare_to_baseline(cell_dicts, baseline, policy) if baseline is not None else None
    past_output = {p.name for p in config.plan.probes if p.looks_past_output}
    verdict = close_gate(
        decide(cells, policy, collateral["drop"], past_output), policy, traces, regression.rose if regression else []
    )
    results = {
        **_header(config, data, scores, command, options),
        "attacks": _attack_records(config, scores),
        "searches": searches,
        "probes": [_probe_record(p, scores) for p in config.plan.probes],
        "scores": _score_records(scores),
        "cells": cell_dicts,
        "statistics": _statistics(cells, policy),
        "collateral": collateral,
        "unlearning_trace": {"policy": policy.unlearning_trace, "cells": traces},
        "verdict": asdict(verdict),
        "policy": policy.to_dict(),
        "baseline": _baseline_record(baseline, regression),
        "recovered_items": recovered_items(scores, cells, policy, membership),
        "curves": recovery_curves(cells, config),
        "samples_dir": "samples",
        "timings": {"total_seconds": round(seconds, 1) if seconds is not None else None, **peak_memory()},
        "phases": phases or [],
    }
    return json.loads(json.dumps(results, default=str))  # plain JSON types: what results.json will hold


def peak_memory() -> dict[str, float]:
    """The process's peak resident memory so far and, on a GPU, its peak CUDA memory, in MB."""
    peak = {"peak_rss_mb": round(peak_rss() / 2**20, 1)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        peak["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def _header(config: AuditConfig, data: AuditData, scores: AuditScores, command: str, options: dict) -> dict:
    """What was audited, with what and how: tool, command, environment, models and data."""
    specs = {"original": config.original, "unlearned": config.unlearned, "reference": config.reference}
    return {
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
            name: {"source": items.source, "n": len(items), "fingerprint": items.fingerprint}
            for name, items in ((name, getattr(data, name)) for name in data.available())
        },
        "controlled": scores.controlled,
    }


def _statistics(cells: list[Cell], policy: Policy) -> dict:
    """How the intervals were computed, and the power of the plain cells."""
    return {
        "resampling": "subjects" if any(c.n_subjects for c in cells) else "items",
        "n_resamples": N_RESAMPLES,
        "confidence": CONFIDENCE,
        "power": power_records(cells, policy),
    }


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
    records: list[dict[str, Any]] = [
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
        status = _status([r for results in per_role.values() for r in results])
        records.append(
            {
                "id": planned.id,
                "attack": planned.attack.name,
                "params": planned.attack.params,
                "tier": planned.attack.tier,
                "family": planned.attack.family_name(),
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


def search_records(
    scores: AuditScores, config: AuditConfig, policy: Policy, checks: dict, halves: dict[str, int]
) -> list[dict]:
    """Each search of the plan, cross-fitted (its stitched results go into ``scores``): the configurations it
    tried, their cost, self-check and status per model, where the unlearned model's search stopped, and per
    probe each model's selection scores and choices."""
    plan = config.plan
    records = []
    for search in plan.searches:

        def passes(config_id: str, probe: str) -> bool:
            return passes_self_check(checks.get((config_id, probe)), policy)

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
                        "status": {role: _status(results) for role, results in run.items()},
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


def _status(results: list) -> str:
    statuses = {r.status for r in results}
    return "skipped" if statuses == {"skipped"} else ("fallback" if "fallback" in statuses else "ok")


def _probe_record(probe, scores: AuditScores) -> dict:
    result = scores.probe_results[("original", NO_ATTACK, None, probe.name)]
    return {
        "name": probe.name,
        "metric": result.metric or probe.params.get("metric", ""),
        "aggregate": probe.aggregate,
        "looks_past_output": probe.looks_past_output,
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
        atomic_write(folder / f"{name}.jsonl", "\n".join(lines) + ("\n" if lines else ""))
