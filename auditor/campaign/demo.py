"""The demo: the embedded world, the bundled unlearning methods (the controls and one per family by
default, every one with ``--all``), and a campaign that audits each method's model.

Unlearned models are kept under ``OUT/models`` and finished audit pieces under
``OUT/cache`` (shared between the audits: the original, the reference and the
attacked reference are the same for every method), so a second run is fast.
The leaderboard is written as ``OUT/index.html``, ``OUT/leaderboard.md`` (the
table in the README) and ``OUT/leaderboard.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditor.campaign.campaign import Campaign, CampaignModel, run_campaign
from auditor.campaign.leaderboard import knowledge_table
from auditor.campaign.outputs import write_campaign_outputs
from auditor.campaign.unlearn_runner import is_current, recipe_inputs, recipe_key, unlearn_to_dir
from auditor.data import load_audit_data
from auditor.engine.plan import make_plan
from auditor.lm.models import fingerprint_dir, load_model
from auditor.plugins import RunContext
from auditor.registry import METHODS
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
class UnlearnJob:
    """One bundled method run on the world's original into ``model_dir``; picklable for worker processes."""

    name: str
    original: Path
    data: AuditData
    model_dir: Path
    before: dict | None = None  # the original's forget/retain knowledge, measured once for every method


def unlearn_method(job: UnlearnJob, log: Callable[[str], None] = print) -> None:
    """Unlearn with one method into ``job.model_dir``, unless a model made from the same recipe (method, its
    code and parameters, data, source model, seed) is there."""
    data = job.data
    unlearner = METHODS.get(job.name)()
    ctx = RunContext(data=data, seed=0)
    inputs = recipe_inputs({"forget": data.forget, "retain": data.retain}, data)
    if is_current(job.model_dir, recipe_key(unlearner, fingerprint_dir(job.original), inputs, 0, ctx.prompts)):
        return
    original = load_model(ModelSpec(str(job.original)))
    record = unlearn_to_dir(unlearner, original, data.forget, data.retain, job.model_dir, ctx, before=job.before)
    log(
        f"[{job.name}] unlearned: forget {record['before']['forget']['accuracy']:.2f} -> "
        f"{record['after']['forget']['accuracy']:.2f}, retain {record['before']['retain']['accuracy']:.2f}"
        f" -> {record['after']['retain']['accuracy']:.2f} ({record['wall_seconds']:.1f} s)"
    )


# The default demo: the five known-answer controls, then one method of each family the mission names.
DEMO_METHODS = ("retrain", "noop", "idk", "quant-hide", "quant-hide-3bit", "ga-gd", "npo-gd", "ext-sub", "prune")


def demo_campaign(
    world, data: AuditData, names: list[str], preset: str, out_dir: Path, dtype: str = "auto"
) -> Campaign:
    """The campaign of the demo: each method's model (``OUT/models/NAME``) against the world's original and
    reference, loaded as ``dtype``, pieces in ``OUT/cache``."""
    models = tuple(CampaignModel(name, ModelSpec(str(out_dir / "models" / name), dtype=dtype)) for name in names)
    plan = make_plan(preset, (), (), 0, data=data)
    reference = ModelSpec(str(world.reference), dtype=dtype)
    audit_args = f"{world_data_options(world)} --preset {preset}" + ("" if dtype == "auto" else f" --dtype {dtype}")
    return Campaign(
        ModelSpec(str(world.original), dtype=dtype),
        reference,
        models,
        plan,
        data,
        out_dir,
        options={"preset": preset, "seed": 0},
        audit_args=audit_args,
    )


def run_demo(
    out_dir: Path,
    preset: str,
    methods: tuple[str, ...],
    cache_dir: str | None,
    jobs: int = 1,
    log: Callable[[str], None] = print,
    engine: str = "local",
    dtype: str = "auto",
) -> Path:
    """Run the whole demo and return the path of the index report.

    A campaign (``auditor.campaign.campaign``) over the methods' models, in ``jobs`` workers of ``engine``
    (``local`` or ``ray``): the methods' unlearning runs (in float32) go beside the shared pieces, then one audit
    per method, its models loaded as ``dtype``.
    The pieces and the unlearned models are kept, so a second run only reads them.
    """
    from auditor.world import WorldSpec, build_world

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
    campaign = demo_campaign(world, data, names, preset, out_dir, dtype)
    unlearning = {
        name: (unlearn_method, UnlearnJob(name, world.original, data, out_dir / "models" / name, before))
        for name in names
    }
    entries = run_campaign(campaign, engine, jobs, resume=True, log=log, makers=unlearning)
    table = write_campaign_outputs(out_dir, entries, checkpoints=False, first="method")
    log("\n" + table)
    return out_dir / "index.html"
