"""The versioned ``results.json`` record of an audit: what was run, on what, and its judgement (plus per-item
samples)."""

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
from auditor.engine.judge import judge
from auditor.engine.records import AuditConfig, AuditScores, ScoreKey, status_of
from auditor.files import atomic_write
from auditor.lm.memory import peak_rss
from auditor.stats.policy import Policy
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


def cost_summary(phases: list[dict], bare: dict | None) -> dict:
    """The cost ledger's totals: tokens by kind, the seconds of the phases that pushed them, and those seconds over
    what the tokens would take at the bare rates (``x_bare``), per phase kind (load, attack, probe, ...)."""
    by_kind: dict[str, dict] = {}
    for phase in phases:
        kind = phase["phase"].split()[0]
        total = by_kind.setdefault(kind, {"seconds": 0.0, "bare_seconds": 0.0, "tokens": {}})
        total["seconds"] += phase["seconds"]
        for name, n in (phase.get("tokens") or {}).items():
            total["tokens"][name] = total["tokens"].get(name, 0) + n
        if phase.get("x_bare"):
            total["bare_seconds"] += phase["seconds"] / phase["x_bare"]
    for total in by_kind.values():
        total["x_bare"] = round(total["seconds"] / total["bare_seconds"], 2) if total["bare_seconds"] > 0 else None
        total["seconds"] = round(total["seconds"], 1)
        del total["bare_seconds"]
    return {"bare": bare, "by_kind": by_kind}


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
    plain: list[Cell] | None = None,
    bare: dict | None = None,
) -> dict:
    """The whole record of an audit, as ``results.json`` holds it: what was run and the one judgement of it
    (``auditor.engine.judge``); ``phases`` from ``PhaseRecorder.to_json``, ``plain`` the plain cells judged
    mid-run, ``bare`` the original's bare throughput (``auditor.lm.ledger.BareRates``)."""
    judgement = judge(scores, config, data, policy, baseline, plain)
    results = {
        **_header(config, data, scores, command, options),
        "attacks": _attack_records(config, scores),
        "searches": judgement.searches,
        "probes": [_probe_record(p, scores) for p in config.plan.probes],
        "scores": _score_records(scores),
        "cells": [
            {**asdict(j.cell), "thresholds": asdict(j.thresholds), "outcome": j.outcome, "gate": j.gate}
            for j in judgement.cells
        ],
        "statistics": {
            "resampling": judgement.resampling,
            "n_resamples": policy.resamples,
            "confidence": policy.confidence,
            "power": judgement.power,
        },
        "collateral": judgement.collateral,
        "unlearning_trace": {"policy": policy.unlearning_trace, "cells": judgement.traces},
        "verdict": asdict(judgement.verdict),
        "policy": policy.to_dict(),
        "baseline": _baseline_record(baseline, judgement.regression),
        "recovered_items": judgement.recovered,
        "curves": judgement.curves,
        "samples_dir": "samples",
        "timings": {"total_seconds": round(seconds, 1) if seconds is not None else None, **peak_memory()},
        "phases": phases or [],
        "cost": cost_summary(phases or [], bare),
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
        status = status_of([r for results in per_role.values() for r in results])
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


def _probe_record(probe, scores: AuditScores) -> dict:
    result = scores.probe_results[ScoreKey.plain("original", probe.name)]
    return {
        "name": probe.name,
        "metric": result.metric or probe.params.get("metric", ""),
        "aggregate": probe.aggregate,
        "looks_past_output": probe.looks_past_output,
        "direct_rank": probe.direct_rank,
        "membership": probe.membership,
        "summary": probe.summary,
        "params": probe.params,
    }


def _score_records(scores: AuditScores) -> list[dict]:
    out = []
    for key, result in scores.probe_results.items():
        out.append(
            {
                "model": key.role,
                "attack": key.attack,
                "seed": key.seed,
                "probe": key.probe,
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
    for key, result in sorted(scores.probe_results.items(), key=lambda kv: str(kv[0])):
        seed = "plain" if key.seed is None else f"s{key.seed}"
        name = _safe_name(f"{key.role}__{key.attack}__{seed}__{key.probe}")
        lines = [
            json.dumps(
                {"item_id": s.item_id, "score": s.score, "member": s.member, **s.detail},
                default=str,
                ensure_ascii=False,
            )
            for s in result.items
        ]
        atomic_write(folder / f"{name}.jsonl", "\n".join(lines) + ("\n" if lines else ""))
