"""The demo: the embedded world, every bundled unlearning method, one audit each, and a leaderboard.

Unlearned models are kept under ``OUT/models`` and finished audit pieces under
``OUT/cache`` (shared between the audits: the original, the reference and the
attacked reference are the same for every method), so a second run is fast.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from auditor.audit import run_audit
from auditor.data import load_audit_data
from auditor.gate import Policy
from auditor.models import load_model
from auditor.orchestrator import AuditConfig
from auditor.plan import make_plan
from auditor.plugins import RunContext
from auditor.registry import METHODS
from auditor.types import AuditData, ModelSpec
from auditor.unlearn_runner import unlearn_to_dir


def world_data(world) -> AuditData:
    """Every item set the world provides, as an audit reads them."""
    return load_audit_data(
        str(world.file("forget")),
        str(world.file("retain")),
        holdout=str(world.file("holdout")),
        multihop=str(world.file("forget_multihop")),
        forget_texts=str(world.file("forget_bio")),
        holdout_texts=str(world.file("holdout_bio")),
        unrelated=str(world.file("unrelated")),
    )


def knowledge_table(data: AuditData, models: dict) -> str:
    """What each model knows of each QA split (direct questions, greedy answers)."""
    from auditor.prompts import DEFAULT_FORMAT
    from auditor.unlearn_runner import qa_knowledge

    splits = {"forget": data.forget, "retain": data.retain, "holdout": data.holdout}
    lines = ["| model | " + " | ".join(f"{s} accuracy" for s in splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for name, loaded in models.items():
        cells = [f"{qa_knowledge(loaded, items, DEFAULT_FORMAT)['accuracy']:.3f}" for items in splits.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
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
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The leaderboard as a Markdown table (the README shows it)."""

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    lines = ["| method | verdict | r(none, qa) | max residual (cell) | collateral |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['verdict']} | {num(r['r_direct'])} | "
            f"{num(r['max_residual'])} ({r['max_cell']}) | {r['collateral']:.1%} |"
        )
    return "\n".join(lines)


def run_demo(
    out_dir: Path, preset: str, methods: tuple[str, ...], cache_dir: str | None, log: Callable[[str], None] = print
) -> Path:
    """Run the whole demo and return the path of the index report."""
    from auditor.world import WorldSpec, build_world
    from reports.index import render_index

    world = build_world(WorldSpec(), cache_dir=cache_dir, progress=log)
    data = world_data(world)
    names = list(methods) or METHODS.names()
    original_spec, reference_spec = ModelSpec(str(world.original)), ModelSpec(str(world.reference))
    original = load_model(original_spec)
    log("What the embedded models know (direct questions):")
    log(knowledge_table(data, {"original": original, "reference": load_model(reference_spec)}))
    plan = make_plan(preset, (), (), 0)
    entries = []
    for name in names:
        model_dir = out_dir / "models" / name
        if not (model_dir / "unlearning.json").is_file():
            log(f"[{name}] unlearning")
            ctx = RunContext(data=data, seed=0)
            record = unlearn_to_dir(METHODS.get(name)(), original, data.forget, data.retain, model_dir, ctx)
            log(
                f"[{name}] forget {record['before']['forget']['accuracy']:.2f} -> "
                f"{record['after']['forget']['accuracy']:.2f}, retain {record['before']['retain']['accuracy']:.2f}"
                f" -> {record['after']['retain']['accuracy']:.2f} ({record['wall_seconds']:.1f} s)"
            )
        log(f"[{name}] auditing ({preset})")
        config = AuditConfig(
            original_spec, ModelSpec(str(model_dir)), reference_spec, plan, cache_dir=out_dir / "cache"
        )
        command = (
            f"unlearn-audit audit --original {world.original} --unlearned {model_dir} "
            f"--reference {world.reference} --forget {world.file('forget')} --retain {world.file('retain')} "
            f"--holdout {world.file('holdout')} --multihop {world.file('forget_multihop')} "
            f"--forget-texts {world.file('forget_bio')} --holdout-texts {world.file('holdout_bio')} "
            f"--unrelated {world.file('unrelated')} --preset {preset} --out {out_dir / name}"
        )
        outputs = run_audit(
            config,
            data,
            Policy(),
            out_dir / name,
            command=command,
            options={"preset": preset, "seed": 0, "method": name},
            resume=True,
        )
        log(f"[{name}] verdict {outputs.results['verdict']['label']}")
        entries.append({"name": name, "href": f"{name}/report.html", "results": outputs.results})
    index = out_dir / "index.html"
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_index(entries))
    os.replace(tmp, index)
    log("\n" + markdown_table(leaderboard_rows(entries)))
    return index
