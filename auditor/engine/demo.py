"""The demo: the embedded world, the bundled unlearning methods (the controls and one per family by
default, every one with ``--all``), one audit each, and a leaderboard.

Unlearned models are kept under ``OUT/models`` and finished audit pieces under
``OUT/cache`` (shared between the audits: the original, the reference and the
attacked reference are the same for every method), so a second run is fast.
The leaderboard is written as ``OUT/index.html`` and ``OUT/leaderboard.md``
(the table in the README).
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from auditor.data import load_audit_data
from auditor.engine.audit import run_audit
from auditor.engine.orchestrator import AuditConfig
from auditor.engine.plan import make_plan
from auditor.engine.unlearn_runner import unlearn_to_dir
from auditor.files import atomic_write
from auditor.lm.models import load_model
from auditor.lm.quiet import quiet_libraries
from auditor.plugins import RunContext
from auditor.registry import METHODS
from auditor.stats.policy import Policy
from auditor.types import DIRECT_PROBE, NO_ATTACK, AuditData, ModelSpec

# audit option -> the world's data file it reads (the notebook lines are the verbatim and text-MIA passages)
WORLD_AUDIT_FILES = {
    "forget": "forget",
    "retain": "retain",
    "holdout": "holdout",
    "multihop": "forget_multihop",
    "forget_texts": "forget_notebook",
    "holdout_texts": "holdout_notebook",
    "unrelated": "unrelated",
}


def world_data(world) -> AuditData:
    """Every item set the world provides, as an audit reads them."""
    paths = {option: str(world.file(name)) for option, name in WORLD_AUDIT_FILES.items()}
    forget, retain = paths.pop("forget"), paths.pop("retain")
    return load_audit_data(forget, retain, mapping=None, **paths)  # mapping named: the paths fill the rest


def world_data_options(world) -> str:
    """The same files as ``unlearn-audit audit`` options."""
    return " ".join(f"--{option.replace('_', '-')} {world.file(name)}" for option, name in WORLD_AUDIT_FILES.items())


def knowledge(data: AuditData, models: dict) -> dict[str, dict[str, dict]]:
    """What each model knows of each QA split (``qa_knowledge``: direct questions, greedy answers)."""
    from auditor.engine.unlearn_runner import qa_knowledge
    from auditor.lm.prompts import DEFAULT_FORMAT

    given = (("forget", data.forget), ("retain", data.retain), ("holdout", data.holdout))
    splits = {name: items for name, items in given if items is not None}
    return {
        name: {split: qa_knowledge(loaded, items, DEFAULT_FORMAT) for split, items in splits.items()}
        for name, loaded in models.items()
    }


def knowledge_table(known: dict[str, dict[str, dict]]) -> str:
    """``knowledge`` as a Markdown table of accuracies."""
    splits = list(next(iter(known.values())))
    lines = ["| model | " + " | ".join(f"{s} accuracy" for s in splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for name, per_split in known.items():
        lines.append(f"| {name} | " + " | ".join(f"{per_split[s]['accuracy']:.3f}" for s in splits) + " |")
    return "\n".join(lines)


MEMBERSHIP_PROBES = ("mia",)  # text-membership cells; every other probe asks for the knowledge itself


def _worst(cells: list[dict]) -> dict | None:
    return max(cells, key=lambda c: c["residual"], default=None)


def _cell_text(cell: dict | None) -> str:
    return "n/a" if cell is None else f"{cell['residual']:.2f} ({cell['attack']} x {cell['probe']})"


def _steps_text(info: dict) -> str:
    """How far the method went: optimiser steps, Ext-Sub's subtraction weight, or '-' for a fixed control."""
    if "steps" in info:
        return str(info["steps"])
    return f"lam {info['lam_used']:g}" if "lam_used" in info else "-"


def leaderboard_rows(entries: list[dict]) -> list[dict]:
    """One summary row per audited method: the strongest knowledge cell and text-membership cell apart."""
    rows = []
    for entry in entries:
        results = entry["results"]
        cells = [c for c in results["cells"] if c["residual"] is not None]
        direct = next((c for c in cells if c["attack"] == NO_ATTACK and c["probe"] == DIRECT_PROBE), None)
        info = entry["unlearning"].get("info", {})
        rows.append(
            {
                "method": entry["name"],
                "verdict": results["verdict"]["label"],
                "r_direct": direct["residual"] if direct else None,
                "knowledge": _cell_text(_worst([c for c in cells if c["probe"] not in MEMBERSHIP_PROBES])),
                "membership": _cell_text(_worst([c for c in cells if c["probe"] in MEMBERSHIP_PROBES])),
                "collateral": results["collateral"]["drop"],
                "forget_after": entry["unlearning"]["after"]["forget"]["accuracy"],
                "retain_after": entry["unlearning"]["after"]["retain"]["accuracy"],
                "steps": _steps_text(info),
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The leaderboard as a Markdown table (the README shows it)."""

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    lines = [
        "| method | verdict | r(none, qa) | max knowledge residual (cell) | max text-membership residual (cell) "
        "| collateral | forget / retain accuracy after | steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['verdict']} | {num(r['r_direct'])} | {r['knowledge']} | {r['membership']} | "
            f"{r['collateral']:.1%} | {r['forget_after']:.2f} / {r['retain_after']:.2f} | {r['steps']} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class MethodJob:
    """One method of the demo: unlearn (unless already done), then audit; picklable for worker processes."""

    name: str
    out_dir: Path
    preset: str
    cache_dir: str | None
    threads: int
    before: dict | None = None  # the original's forget/retain knowledge, measured once for every method


def run_method(job: MethodJob, log: Callable[[str], None] = print) -> dict:
    """Unlearn with one method (reusing a finished model) and audit it; the index entry."""
    import torch

    from auditor.world import WorldSpec, build_world

    torch.set_num_threads(job.threads)
    world = build_world(WorldSpec(), cache_dir=job.cache_dir)
    data = world_data(world)
    model_dir = job.out_dir / "models" / job.name
    if not (model_dir / "unlearning.json").is_file():
        ctx = RunContext(data=data, seed=0)
        method, original = METHODS.get(job.name)(), load_model(ModelSpec(str(world.original)))
        record = unlearn_to_dir(method, original, data.forget, data.retain, model_dir, ctx, before=job.before)
        log(
            f"[{job.name}] unlearned: forget {record['before']['forget']['accuracy']:.2f} -> "
            f"{record['after']['forget']['accuracy']:.2f}, retain {record['before']['retain']['accuracy']:.2f}"
            f" -> {record['after']['retain']['accuracy']:.2f} ({record['wall_seconds']:.1f} s)"
        )
    config = audit_config(world, model_dir, job.preset, job.out_dir)
    command = (
        f"unlearn-audit audit --original {world.original} --unlearned {model_dir} --reference {world.reference} "
        f"{world_data_options(world)} --preset {job.preset} --out {job.out_dir / job.name}"
    )
    options = {"preset": job.preset, "seed": 0, "method": job.name}
    start = time.perf_counter()
    outputs = run_audit(config, data, Policy(), job.out_dir / job.name, command=command, options=options, resume=True)
    log(f"[{job.name}] audited: {outputs.results['verdict']['label']} ({time.perf_counter() - start:.0f} s)")
    unlearning = json.loads((model_dir / "unlearning.json").read_text(encoding="utf-8"))
    return {"name": job.name, "href": f"{job.name}/report.html", "results": outputs.results, "unlearning": unlearning}


def _print_flushed(message: str) -> None:
    print(message, flush=True)


# The default demo: the four known-answer controls, then one method of each family the mission names.
DEMO_METHODS = ("retrain", "noop", "idk", "quant-hide", "ga-gd", "npo-gd", "ext-sub", "prune")


def audit_config(world, unlearned: Path, preset: str, out_dir: Path) -> AuditConfig:
    """The audit of ``unlearned`` against the world's original and reference, pieces cached under ``out_dir``."""
    plan = make_plan(preset, (), (), 0)
    return AuditConfig(
        ModelSpec(str(world.original)),
        ModelSpec(str(unlearned)),
        ModelSpec(str(world.reference)),
        plan,
        cache_dir=out_dir / "cache",
    )


def run_demo(
    out_dir: Path,
    preset: str,
    methods: tuple[str, ...],
    cache_dir: str | None,
    jobs: int = 1,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the whole demo and return the path of the index report.

    The pieces every method's audit shares (the original, the reference and the
    attacked reference) are computed first, once; the methods then run in
    ``jobs`` worker processes, the CPU threads split between them, the exact
    retrain (the slowest to make) first.
    """
    from auditor.engine.orchestrator import Orchestrator
    from auditor.world import WorldSpec, build_world
    from reports.index import render_index

    names = list(methods or DEMO_METHODS)
    retrains = (METHODS.get("retrain").defaults["seed"],) if "retrain" in names else ()
    world = build_world(WorldSpec(), cache_dir=cache_dir, progress=log, retrains=retrains)
    data = world_data(world)
    models = {
        "original": load_model(ModelSpec(str(world.original))),
        "reference": load_model(ModelSpec(str(world.reference))),
    }
    known = knowledge(data, models)
    log("What the embedded models know (direct questions):")
    log(knowledge_table(known))
    before = {split: known["original"][split] for split in ("forget", "retain")}
    start = time.perf_counter()
    Orchestrator(audit_config(world, world.original, preset, out_dir), data).run_shared()
    log(
        f"original, reference and attacked reference probed once for every method ({time.perf_counter() - start:.0f} s)"
    )
    jobs_of = [MethodJob(n, out_dir, preset, cache_dir, 1, before) for n in sorted(names, key=lambda n: n != "retrain")]
    entries = _run_methods(jobs_of, jobs, log)
    ordered = [entries[n] for n in names]
    table = markdown_table(leaderboard_rows(ordered))
    atomic_write(out_dir / "leaderboard.md", table + "\n")
    atomic_write(out_dir / "index.html", render_index(ordered))
    log("\n" + table)
    return out_dir / "index.html"


def _run_methods(method_jobs: list[MethodJob], jobs: int, log: Callable[[str], None]) -> dict[str, dict]:
    """Each method's index entry, in ``jobs`` worker processes that share the CPU threads (here when one)."""
    import torch

    threads = torch.get_num_threads()
    workers = min(jobs, len(method_jobs))
    log(f"unlearning and auditing {len(method_jobs)} methods in {workers} worker process(es) ...")
    if workers <= 1:
        return {job.name: run_method(replace(job, threads=threads), log) for job in method_jobs}
    per_job = max(1, threads // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=quiet_libraries) as pool:
        futures = [pool.submit(run_method, replace(job, threads=per_job), _print_flushed) for job in method_jobs]
        return {job.name: f.result() for job, f in zip(method_jobs, futures, strict=True)}
