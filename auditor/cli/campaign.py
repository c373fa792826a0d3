"""``unlearn-audit campaign``: many unlearned models (or checkpoints) against one original, one leaderboard."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from auditor.campaign.pools import require_ray
from auditor.campaign.roster import NAME, CampaignModel
from auditor.cli.audit_options import (
    audit_data,
    config_option,
    data_options,
    engine_options,
    opt,
    plan_options,
    workers,
)
from auditor.cli.common import ensure_new_dir, model_options, set_threads, spec_of
from auditor.cli.tools import prompt_format, prompt_options
from auditor.errors import UserError

ROW_KEYS = {"name", "path", "adapter", "revision", "step", "dtype", "device", "batch_size"}
SPEC_KEYS = ("base", "adapter", "revision")  # the keys of a model argument's own ``base=...,adapter=...`` form
# the options that make the data and the plan: each model's report records them as an `audit` command
AUDIT_ARGS = (
    *("forget", "retain", "holdout", "multihop", "forget_texts", "holdout_texts", "unrelated", "field_map"),
    *("preset", "attacks", "probes", "attack_budget", "policy", "seed"),
)


def _named(text: str) -> tuple[str | None, str]:
    """``NAME=MODEL`` -> (NAME, MODEL); a plain model argument (a path, or ``base=...,adapter=...``) -> (None, it)."""
    name, sep, rest = text.partition("=")
    if sep and name not in SPEC_KEYS and NAME.fullmatch(name):
        return name, rest
    return None, text


def _default_name(spec) -> str:
    """A model's name when none is given: its adapter's folder name, else its own (``.gguf`` dropped)."""
    return Path(spec.adapter or spec.path).name.removesuffix(".gguf")


def _manifest_rows(path: str) -> list[dict]:
    """The rows of a YAML or JSON manifest: a list of rows, or a mapping whose ``models`` is one."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read manifest {path}: {str(exc).splitlines()[0]}") from None
    rows = raw.get("models") if isinstance(raw, dict) else raw
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
        raise UserError(f"manifest {path}: expected a list of models (each a mapping with name and path)")
    for number, row in enumerate(rows, 1):
        unknown = set(row) - ROW_KEYS
        if unknown or "path" not in row:
            what = f"unknown key(s) {', '.join(sorted(map(str, unknown)))}" if unknown else "no path"
            raise UserError(f"manifest {path}, model {number}: {what} (keys: {', '.join(sorted(ROW_KEYS))})")
        if "step" in row and (not isinstance(row["step"], int) or row["step"] < 0):
            raise UserError(f"manifest {path}, model {number}: step must be a whole number >= 0")
    return rows


def read_models(arguments: tuple[str, ...], manifest: str | None, options: dict) -> list[CampaignModel]:
    """The models of ``--unlearned`` (``NAME=MODEL`` or ``MODEL``) and of the manifest's rows, each row with its own
    adapter, revision, dtype, device and batch size when it gives them."""
    models = []
    for argument in arguments:
        name, text = _named(argument)
        spec = spec_of(text, options)
        models.append(CampaignModel(name or _default_name(spec), spec))
    for row in _manifest_rows(manifest) if manifest else []:
        text = str(row["path"])
        if row.get("adapter") or row.get("revision"):
            extra = ",".join(f"{key}={row[key]}" for key in ("adapter", "revision") if row.get(key))
            text = f"base={text},{extra}"
        own = {key: row[key] for key in ("dtype", "device", "batch_size") if key in row}
        spec = spec_of(text, {**options, **own})
        models.append(CampaignModel(str(row.get("name") or _default_name(spec)), spec, row.get("step")))
    return models


def _audit_args(kw: dict) -> str:
    """The data and plan options given, as ``unlearn-audit audit`` options."""
    parts = []
    for key in AUDIT_ARGS:
        values = kw[key] if isinstance(kw[key], tuple) else (kw[key],)
        flag = (
            "--" + key.removesuffix("s").replace("_", "-")
            if key in ("attacks", "probes")
            else "--" + key.replace("_", "-")
        )
        parts += [f"{flag} {shlex.quote(str(value))}" for value in values if value is not None]
    return " ".join(parts)


@click.command("campaign")
@config_option
@opt("original", required=True, help="The model before unlearning (directory, hub id, or base=...,adapter=...).")
@click.option(
    "--unlearned",
    "unlearned",
    multiple=True,
    help="NAME=MODEL or MODEL (repeatable): a model to audit, NAME its folder under OUT (default: the model's "
    "folder name). A name with a step (step100, checkpoint-500) makes the models checkpoints of one run.",
)
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False),
    help="YAML or JSON: a list of models (or a mapping with one under 'models'), each with name, path and optionally "
    "adapter, revision, step, dtype, device, batch_size.",
)
@opt("reference", help="A never-trained control (exact retrain, retain-only or base model). Strongly advised.")
@data_options
@plan_options
@opt("out", default="runs/campaign", show_default=True, type=click.Path(file_okay=False))
@opt("resume", is_flag=True, help="Reuse finished pieces in OUT/cache instead of starting afresh.")
@engine_options
@prompt_options
@model_options
def campaign(**kw) -> None:
    """Audit many unlearned models (or the checkpoints of one run) against one original; one leaderboard.

    Each model gets its audit and reports in OUT/NAME, as `unlearn-audit audit` writes them; the pieces every audit
    shares (the original and the reference, as given and attacked) are computed once. The campaign writes
    OUT/index.html, OUT/leaderboard.md and OUT/leaderboard.json. When every model has a step (from its name or the
    manifest), the index draws each probe's residual as given and under the strongest attack against the step.

    Exit code, the worst gate: 1 when a model failed its gate, else 3 when an audit was inconclusive, else 0;
    2 usage or input error, 4 runtime error.
    """
    from auditor.campaign.campaign import Campaign, run_campaign, worst_exit_code
    from auditor.campaign.outputs import write_campaign_outputs
    from auditor.campaign.roster import checked_models
    from auditor.engine.plan import make_plan
    from auditor.lm.models import check_comparable_files, load_tokenizer
    from auditor.stats.policy import load_policy

    set_threads()
    if kw["engine"] == "ray":
        require_ray()
    if not kw["unlearned"] and not kw["manifest"]:
        raise UserError("give the models to audit: --unlearned NAME=MODEL (repeatable) or --manifest FILE")
    original = spec_of(kw["original"], kw)
    reference = spec_of(kw["reference"], kw) if kw["reference"] else None
    models = checked_models(read_models(kw["unlearned"], kw["manifest"], kw))
    prompts = prompt_format(load_tokenizer(original), kw)
    for role, spec in [(model.name, model.spec) for model in models] + [("reference", reference)]:
        if spec is not None:
            check_comparable_files(original, spec, role)
    policy, data = load_policy(kw["policy"]), audit_data(kw)
    choices = any(item.choices for item in data.forget.items)
    plan = make_plan(kw["preset"], kw["attacks"], kw["probes"], kw["seed"], choices, kw["attack_budget"], data)
    specs = [original, reference, *(model.spec for model in models)]
    inputs = [s.path for s in specs if s] + [s.adapter for s in specs if s and s.adapter]
    out_dir = ensure_new_dir(kw["out"], protect=tuple(inputs))
    options = {k: v for k, v in kw.items() if k not in ("allow_pickle", "trust_remote_code") or v}
    run = Campaign(
        *(original, reference, models, plan, data, out_dir, policy, kw["seed"], prompts),
        options=options,
        audit_args=_audit_args(kw),
    )
    log = lambda message: click.echo(message, err=True)  # noqa: E731
    entries = run_campaign(run, kw["engine"], workers(kw["engine"], kw["jobs"]), kw["resume"], log)
    click.echo(write_campaign_outputs(out_dir, entries, run.checkpoints))
    click.echo(f"\nindex report: {(out_dir / 'index.html').resolve()}")
    click.echo(f"leaderboard: {out_dir / 'leaderboard.md'}, {out_dir / 'leaderboard.json'}")
    sys.exit(worst_exit_code(entries))
