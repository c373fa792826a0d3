"""The demo: the embedded world, every bundled unlearning method, one audit each, and a leaderboard.

Unlearned models are kept under ``OUT/models`` and finished audit pieces under
``OUT/cache`` (shared between the audits: the original, the reference and the
attacked reference are the same for every method), so a second run is fast.
The leaderboard is written as ``OUT/index.html`` and ``OUT/leaderboard.md``
(the table in the README).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from auditor.audit import run_audit
from auditor.data import load_audit_data
from auditor.gate import Policy
from auditor.models import load_model
from auditor.orchestrator import AuditConfig
from auditor.plan import make_plan
from auditor.plugins import RunContext
from auditor.quiet import quiet_libraries
from auditor.registry import METHODS
from auditor.types import AuditData, ModelSpec
from auditor.unlearn_runner import unlearn_to_dir

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
    return load_audit_data(paths.pop("forget"), paths.pop("retain"), **paths)


def world_data_options(world) -> str:
    """The same files as ``unlearn-audit audit`` options."""
    return " ".join(f"--{option.replace('_', '-')} {world.file(name)}" for option, name in WORLD_AUDIT_FILES.items())


def knowledge(data: AuditData, models: dict) -> dict[str, dict[str, dict]]:
    """What each model knows of each QA split (``qa_knowledge``: direct questions, greedy answers)."""
    from auditor.prompts import DEFAULT_FORMAT
    from auditor.unlearn_runner import qa_knowledge

    splits = {"forget": data.forget, "retain": data.retain, "holdout": data.holdout}
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


def leaderboard_rows(entries: list[dict]) -> list[dict]:
    """One summary row per audited method."""
    rows = []
    for entry in entries:
        results = entry["results"]
        cells = [c for c in results["cells"] if c["residual"] is not None]
        direct = next((c for c in cells if c["attack"] == "none" and c["probe"] == "qa"), None)
        worst = max(cells, key=lambda c: c["residual"], default=None)
        rows.append(
            {
                "method": entry["name"],
                "verdict": results["verdict"]["label"],
                "r_direct": direct["residual"] if direct else None,
                "max_residual": worst["residual"] if worst else None,
                "max_cell": f"{worst['attack']} x {worst['probe']}" if worst else "",
                "collateral": results["collateral"]["drop"],
                "forget_after": entry["unlearning"]["after"]["forget"]["accuracy"],
                "retain_after": entry["unlearning"]["after"]["retain"]["accuracy"],
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The leaderboard as a Markdown table (the README shows it)."""

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    lines = [
        "| method | verdict | r(none, qa) | max residual (cell) | collateral | forget / retain accuracy after |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['verdict']} | {num(r['r_direct'])} | "
            f"{num(r['max_residual'])} ({r['max_cell']}) | {r['collateral']:.1%} | "
            f"{r['forget_after']:.2f} / {r['retain_after']:.2f} |"
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
    original_spec, reference_spec = ModelSpec(str(world.original)), ModelSpec(str(world.reference))
    model_dir = job.out_dir / "models" / job.name
    if not (model_dir / "unlearning.json").is_file():
        ctx = RunContext(data=data, seed=0)
        method, original = METHODS.get(job.name)(), load_model(original_spec)
        record = unlearn_to_dir(method, original, data.forget, data.retain, model_dir, ctx, before=job.before)
        log(
            f"[{job.name}] unlearned: forget {record['before']['forget']['accuracy']:.2f} -> "
            f"{record['after']['forget']['accuracy']:.2f}, retain {record['before']['retain']['accuracy']:.2f}"
            f" -> {record['after']['retain']['accuracy']:.2f} ({record['wall_seconds']:.1f} s)"
        )
    plan = make_plan(job.preset, (), (), 0)
    config = AuditConfig(
        original_spec, ModelSpec(str(model_dir)), reference_spec, plan, cache_dir=job.out_dir / "cache"
    )
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


def run_demo(
    out_dir: Path,
    preset: str,
    methods: tuple[str, ...],
    cache_dir: str | None,
    jobs: int = 1,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the whole demo and return the path of the index report.

    The first method runs alone, so the audit pieces every method shares (the
    original, the reference and the attacked reference) are computed once;
    the others then run in ``jobs`` worker processes, the CPU threads split
    between them, the exact retrain (the slowest to make) first.
    """
    import torch

    from auditor.world import WorldSpec, build_world
    from reports.index import render_index

    names = list(methods) or METHODS.names()
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
    threads = torch.get_num_threads()
    first, rest = names[0], sorted(names[1:], key=lambda n: n != "retrain")
    entries = {first: run_method(MethodJob(first, out_dir, preset, cache_dir, threads, before), log)}
    if rest:
        log(f"auditing {len(rest)} more methods in {min(jobs, len(rest))} worker process(es) ...")
    if jobs > 1 and len(rest) > 1:
        per_job = max(1, threads // jobs)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(jobs, len(rest)), mp_context=context, initializer=quiet_libraries) as pool:
            futures = [
                pool.submit(run_method, MethodJob(n, out_dir, preset, cache_dir, per_job, before), _print_flushed)
                for n in rest
            ]
            entries.update((n, f.result()) for n, f in zip(rest, futures, strict=True))
    else:
        entries.update((n, run_method(MethodJob(n, out_dir, preset, cache_dir, threads, before), log)) for n in rest)
    ordered = [entries[n] for n in names]
    table = markdown_table(leaderboard_rows(ordered))
    _write_atomic(out_dir / "leaderboard.md", table + "\n")
    _write_atomic(out_dir / "index.html", render_index(ordered))
    log("\n" + table)
    return out_dir / "index.html"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
