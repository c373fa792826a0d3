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
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from auditor.campaign.leaderboard import attack_table, knowledge_table, leaderboard_rows, markdown_table
from auditor.campaign.pools import worker_pool
from auditor.campaign.unlearn_runner import is_current, recipe_key, unlearn_to_dir
from auditor.data import load_audit_data
from auditor.engine.audit import run_audit
from auditor.engine.plan import make_plan
from auditor.engine.records import AuditConfig
from auditor.files import atomic_write
from auditor.lm.models import fingerprint_dir, load_model
from auditor.lm.quiet import quiet_libraries
from auditor.plugins import RunContext
from auditor.registry import METHODS
from auditor.stats.policy import Policy
from auditor.types import AuditData, ModelSpec

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
    return load_audit_data(forget, retain, mapping=None, disjoint=True, **paths)  # named: the paths fill the rest


def world_data_options(world) -> str:
    """The same files as ``unlearn-audit audit`` options."""
    return " ".join(f"--{option.replace('_', '-')} {world.file(name)}" for option, name in WORLD_AUDIT_FILES.items())


def knowledge(data: AuditData, models: dict) -> dict[str, dict[str, dict]]:
    """What each model knows of each QA split (``qa_knowledge``: direct questions, greedy answers)."""
    from auditor.campaign.unlearn_runner import qa_knowledge
    from auditor.lm.prompts import DEFAULT_FORMAT

    given = (("forget", data.forget), ("retain", data.retain), ("holdout", data.holdout))
    splits = {name: items for name, items in given if items is not None}
    return {
        name: {split: qa_knowledge(loaded, items, DEFAULT_FORMAT) for split, items in splits.items()}
        for name, loaded in models.items()
    }


@dataclass(frozen=True)
class DemoJob:
    """Where one worker's piece of the demo runs; picklable for worker processes."""

    out_dir: Path
    preset: str
    cache_dir: str | None
    threads: int


@dataclass(frozen=True)
class SharedPart:
    """Part ``part`` of ``parts`` of the pieces every audit shares: part 0 probes the original and the
    reference; each part probes the reference under every ``parts``-th attack of the plan."""

    job: DemoJob
    part: int
    parts: int


@dataclass(frozen=True)
class MethodJob:
    """One method of the demo: unlearn (unless already done), then audit."""

    name: str
    job: DemoJob
    before: dict | None = None  # the original's forget/retain knowledge, measured once for every method


def _world(job: DemoJob):
    """The world and its audit data, in a worker with ``job.threads`` CPU threads."""
    import torch

    from auditor.world import WorldSpec, build_world

    torch.set_num_threads(job.threads)
    world = build_world(WorldSpec(), cache_dir=job.cache_dir)
    return world, world_data(world)


def shared_part(shared: SharedPart, log: Callable[[str], None] = print) -> None:
    """Compute and store one part of the shared pieces (see ``SharedPart``)."""
    from auditor.engine.orchestrator import Orchestrator

    start = time.perf_counter()
    world, data = _world(shared.job)
    config = audit_config(world, data, world.original, shared.job.preset, shared.job.out_dir)
    attacks = config.plan.attacks[shared.part :: shared.parts]
    config = replace(config, plan=replace(config.plan, attacks=attacks))
    Orchestrator(config, data).run_shared(plain=shared.part == 0)
    probed = ("the original, the reference and " if shared.part == 0 else "") + "the reference under "
    names = ", ".join(planned.id for planned in attacks) or "no attack"
    log(f"[shared {shared.part + 1}/{shared.parts}] {probed}{names} probed ({time.perf_counter() - start:.0f} s)")


def unlearn_method(method: MethodJob, log: Callable[[str], None] = print) -> None:
    """Unlearn with one method into ``OUT/models/NAME``, unless a model made from the same recipe (method, its
    code and parameters, data, source model, seed) is there."""
    world, data = _world(method.job)
    model_dir = method.job.out_dir / "models" / method.name
    unlearner = METHODS.get(method.name)()
    measured = {"forget": data.forget, "retain": data.retain}
    if is_current(model_dir, recipe_key(unlearner, fingerprint_dir(world.original), measured, seed=0)):
        return
    ctx = RunContext(data=data, seed=0)
    original = load_model(ModelSpec(str(world.original)))
    record = unlearn_to_dir(unlearner, original, data.forget, data.retain, model_dir, ctx, before=method.before)
    log(
        f"[{method.name}] unlearned: forget {record['before']['forget']['accuracy']:.2f} -> "
        f"{record['after']['forget']['accuracy']:.2f}, retain {record['before']['retain']['accuracy']:.2f}"
        f" -> {record['after']['retain']['accuracy']:.2f} ({record['wall_seconds']:.1f} s)"
    )


def audit_method(method: MethodJob, log: Callable[[str], None] = print) -> dict:
    """Audit one unlearned model against the world's original and reference; its index entry."""
    world, data = _world(method.job)
    out_dir, preset = method.job.out_dir, method.job.preset
    model_dir = out_dir / "models" / method.name
    config = audit_config(world, data, model_dir, preset, out_dir)
    command = (
        f"unlearn-audit audit --original {world.original} --unlearned {model_dir} --reference {world.reference} "
        f"{world_data_options(world)} --preset {preset} --out {out_dir / method.name}"
    )
    options = {"preset": preset, "seed": 0, "method": method.name}
    start = time.perf_counter()
    outputs = run_audit(config, data, Policy(), out_dir / method.name, command=command, options=options, resume=True)
    log(f"[{method.name}] audited: {outputs.results['verdict']['label']} ({time.perf_counter() - start:.0f} s)")
    unlearning = json.loads((model_dir / "unlearning.json").read_text(encoding="utf-8"))
    return {
        "name": method.name,
        "href": f"{method.name}/report.html",
        "results": outputs.results,
        "unlearning": unlearning,
    }


def _print_flushed(message: str) -> None:
    print(message, flush=True)


# The default demo: the five known-answer controls, then one method of each family the mission names.
DEMO_METHODS = ("retrain", "noop", "idk", "quant-hide", "quant-hide-3bit", "ga-gd", "npo-gd", "ext-sub", "prune")


def audit_config(world, data: AuditData, unlearned: Path, preset: str, out_dir: Path) -> AuditConfig:
    """The audit of ``unlearned`` against the world's original and reference on ``data``, pieces cached under
    ``out_dir``."""
    plan = make_plan(preset, (), (), 0, data=data)
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
    engine: str = "local",
) -> Path:
    """Run the whole demo and return the path of the index report.

    Two phases in ``jobs`` workers (processes of ``engine``: ``local`` or
    ``ray``), the CPU threads split between them: first the pieces every audit shares (the original, the reference and
    the attacked reference, split in parts) beside the methods' unlearning runs,
    then one audit per method, which finds the shared pieces stored.
    """
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
    entries = _run_phases(DemoJob(out_dir, preset, cache_dir, 1), names, before, jobs, engine, log)
    ordered = [entries[n] for n in names]
    table = markdown_table(leaderboard_rows(ordered)) + "\n\n" + attack_table(ordered)
    atomic_write(out_dir / "leaderboard.md", table + "\n")
    atomic_write(out_dir / "index.html", render_index(ordered))
    log("\n" + table)
    return out_dir / "index.html"


def _run_phases(
    job: DemoJob, names: list[str], before: dict, jobs: int, engine: str, log: Callable[[str], None]
) -> dict[str, dict]:
    """Each method's index entry, the two phases of ``run_demo`` run by ``jobs`` workers of ``engine``
    (``auditor.campaign.pools``; here when one local worker)."""
    import torch

    threads = torch.get_num_threads()
    workers = min(jobs, len(names))
    log(f"unlearning and auditing {len(names)} methods in {workers} {engine} worker(s) ...")
    if workers <= 1 and engine == "local":
        job = replace(job, threads=threads)
        shared_part(SharedPart(job, 0, 1), log)
        methods = [MethodJob(name, job, before) for name in names]
        for method in methods:
            unlearn_method(method, log)
        return {method.name: audit_method(method, log) for method in methods}
    job = replace(job, threads=max(1, threads // workers))
    methods = [MethodJob(name, job, before) for name in names]
    with worker_pool(engine, workers, job.threads, quiet_libraries) as submit:
        first = [submit(shared_part, SharedPart(job, part, workers), _print_flushed) for part in range(workers)]
        first += [submit(unlearn_method, method, _print_flushed) for method in methods]
        for future in first:
            future.result()
        audits = {method.name: submit(audit_method, method, _print_flushed) for method in methods}
        return {name: future.result() for name, future in audits.items()}
