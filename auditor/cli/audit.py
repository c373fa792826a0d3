"""The audit commands: ``audit``, ``report``, ``compare``, ``demo``."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from auditor.campaign.pools import ENGINES, require_ray
from auditor.cli.audit_options import (
    audit_data,
    config_option,
    data_options,
    engine_options,
    opt,
    plan_options,
    workers,
)
from auditor.cli.common import cache_dir_option, ensure_new_dir, model_options, set_threads, show_progress, spec_of
from auditor.cli.tools import prompt_format, prompt_options
from auditor.engine.plan import DEMO_PRESET, PRESETS
from auditor.errors import UserError


@click.command("audit")
@config_option
@opt("original", required=True, help="The model before unlearning (directory, hub id, or base=...,adapter=...).")
@opt("unlearned", required=True, help="The candidate model (same forms).")
@opt("reference", help="A never-trained control (exact retrain, retain-only or base model). Strongly advised.")
@data_options
@plan_options
@opt("baseline", type=click.Path(dir_okay=False), help="A previous results.json: fail cells whose residual rose.")
@opt("out", default="runs/audit", show_default=True, type=click.Path(file_okay=False))
@opt("resume", is_flag=True, help="Reuse finished pieces in OUT/cache instead of starting afresh.")
@opt(
    "keep-attacked",
    type=click.Path(file_okay=False),
    help="Save the attacked models here for inspection (LoRA adapters as PEFT folders, quantized copies whole); "
    "by default no model weights are written.",
)
@engine_options
@prompt_options
@model_options
def audit(**kw) -> None:
    """Audit an unlearned model against the original and a reference; exit code is the gate.

    Certified bound: the largest upper bound (95% by default: the policy's confidence) over the informative cells
    (subjects resampled with their items); no attack of the plan recovers more than that share of what the
    original knew.

    --engine ray or --jobs N: the independent pieces (each model as given, each attack x seed x model with its
    probes) run in workers first, stored in OUT/cache, which every worker must reach (shared storage on a
    cluster); the results are those of a local run.

    Exit codes: 0 pass, 1 gate failed, 2 usage or input error, 3 inconclusive, 4 runtime error.
    """
    from auditor.engine.audit import read_baseline, run_audit
    from auditor.engine.plan import make_plan
    from auditor.engine.records import AuditConfig
    from auditor.lm.models import check_comparable_files, load_tokenizer
    from auditor.stats.policy import load_policy

    set_threads()
    if kw["engine"] == "ray":
        require_ray()
    original, unlearned = spec_of(kw["original"], kw), spec_of(kw["unlearned"], kw)
    reference = spec_of(kw["reference"], kw) if kw["reference"] else None
    prompts = prompt_format(load_tokenizer(original), kw)  # before anything is written: it may refuse
    for role, spec in (("unlearned", unlearned), ("reference", reference)):
        if spec is not None:
            check_comparable_files(original, spec, role)
    inputs = [s.path for s in (original, unlearned, reference) if s] + [s.adapter for s in (unlearned,) if s.adapter]
    policy, baseline = load_policy(kw["policy"]), read_baseline(kw["baseline"])
    data = audit_data(kw)
    choices = any(item.choices for item in data.forget.items)
    plan = make_plan(kw["preset"], kw["attacks"], kw["probes"], kw["seed"], choices, kw["attack_budget"], data)
    out_dir = ensure_new_dir(kw["out"], protect=tuple(inputs))  # only once every option read is valid
    keep = ensure_new_dir(kw["keep_attacked"], protect=tuple(inputs)) if kw["keep_attacked"] else None
    config = AuditConfig(
        *(original, unlearned, reference, plan),
        seed=kw["seed"],
        prompts=prompts,
        cache_dir=out_dir / "cache",
        keep_attacked=keep,
        progress=show_progress(),
    )
    options = {k: v for k, v in kw.items() if k not in ("allow_pickle", "trust_remote_code") or v}
    command = "unlearn-audit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    jobs = workers(kw["engine"], kw["jobs"])
    run = dict(
        command=command, options=options, baseline=baseline, resume=kw["resume"], log=lambda m: click.echo(m, err=True)
    )
    if kw["engine"] == "local" and jobs == 1:
        outputs = run_audit(config, data, policy, out_dir, **run)
    else:
        from auditor.campaign.pieces_on_workers import run_audit_on_workers

        outputs = run_audit_on_workers(config, data, policy, out_dir, engine=kw["engine"], jobs=jobs, **run)
    print_verdict(outputs.results, outputs.files)
    sys.exit(outputs.exit_code)


def print_verdict(results: dict, files: dict) -> None:
    verdict = results["verdict"]
    gate = "PASS" if verdict["gate_passed"] else "FAIL"
    bound = verdict.get("certified_bound")
    bound_text = f"  certified bound: {bound:.2f}" if bound is not None else ""
    click.echo(
        f"verdict: {verdict['label']}  gate: {gate}  collateral: {results['collateral']['drop']:.1%}{bound_text}"
    )
    for reason in verdict["reasons"][:8]:
        click.echo(f"  {reason}")
    for failure in verdict["failures"]:
        click.echo(f"  gate: {failure}")
    if not results["controlled"]:
        click.echo("  note: no reference model; every cell is uncontrolled (floor: the holdout set; chance for mcq)")
    for name, path in files.items():
        click.echo(f"{name}: {path}")


@click.command("report")
@click.argument("results_file", type=click.Path(dir_okay=False))
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write the HTML report here.")
@click.option("--junit", "junit_out", type=click.Path(dir_okay=False), help="Write JUnit XML here.")
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False), help="Write the Markdown summary here.")
def report(results_file: str, html_out: str | None, junit_out: str | None, markdown_out: str | None) -> None:
    """Re-render reports from a results.json (no torch needed)."""
    from reports.html import render_html
    from reports.junit import render_junit
    from reports.load import load_results
    from reports.markdown import render_markdown

    results = load_results(results_file)
    targets = [(html_out, render_html), (junit_out, render_junit), (markdown_out, render_markdown)]
    if not any(path for path, _ in targets):
        raise UserError("give at least one of --html, --junit, --markdown")
    for path, render in targets:
        if path:
            Path(path).write_text(render(results), encoding="utf-8")
            click.echo(f"wrote {path}")


@click.command("compare")
@click.argument("baseline_file", type=click.Path(dir_okay=False))
@click.argument("results_file", type=click.Path(dir_okay=False))
@click.option("--policy", type=click.Path(dir_okay=False), help="Policy YAML (regression_tolerance).")
def compare(baseline_file: str, results_file: str, policy: str | None) -> None:
    """Compare two results.json files; exit 1 when a cell's residual rose."""
    from auditor.engine.audit import read_baseline
    from auditor.stats.gate import compare_to_baseline
    from auditor.stats.policy import load_policy

    baseline, current = read_baseline(baseline_file), read_baseline(results_file)
    assert baseline is not None and current is not None  # both paths are required arguments
    regression = compare_to_baseline(current["cells"], baseline, load_policy(policy))
    click.echo(f"compared {regression.compared} cells; {len(regression.rose)} rose")
    for line in regression.rose:
        click.echo(f"  {line}")
    sys.exit(1 if regression.rose else 0)


@click.command("demo")
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default=DEMO_PRESET,
    show_default=True,
    help="Audit preset for every method (`unlearn-audit list presets`); core: one attack of each family.",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    help="Only these methods (repeatable); default: the controls and one method per family.",
)
@click.option("--all", "all_methods", is_flag=True, help="Every bundled method ('unlearn-audit list methods').")
@cache_dir_option
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=lambda: min(4, os.cpu_count() or 1),
    show_default="CPU cores, at most 4",
    help="Methods audited at once, in worker processes that share the CPU threads.",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="local",
    show_default=True,
    help="What runs the workers: local processes, or Ray tasks (the ray extra; a cluster when RAY_ADDRESS is set).",
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16"]),
    default="auto",
    show_default=True,
    envvar="UNLEARN_AUDIT_DTYPE",
    help="The audits' weights: auto (bf16 on a GPU that has it, else fp32) or forced; the methods unlearn in "
    "float32 either way.",
)
def demo(
    out: str,
    preset: str,
    methods: tuple[str, ...],
    all_methods: bool,
    cache_dir: str | None,
    jobs: int,
    engine: str,
    dtype: str,
) -> None:
    """Install the embedded world, unlearn it with the bundled methods, audit each, write an index report.

    By default: the known-answer controls (retrain, noop, idk, quant-hide, quant-hide-3bit) and one
    method of each family (ga-gd, npo-gd, ext-sub, prune); --all runs every method.
    """
    from auditor.campaign.demo import run_demo
    from auditor.registry import METHODS

    if all_methods and methods:
        raise UserError("--all and --method exclude each other")
    if engine == "ray":
        require_ray()
    methods = tuple(METHODS.names()) if all_methods else methods
    set_threads()
    out_dir = ensure_new_dir(out)
    index = run_demo(out_dir, preset, methods, cache_dir, jobs=jobs, log=click.echo, engine=engine, dtype=dtype)
    click.echo(f"\nindex report: {index.resolve()}")
