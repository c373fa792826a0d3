"""The options an audit and a campaign share: the data, the plan, the engine, and a YAML ``--config``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from auditor.campaign.pools import ENGINES
from auditor.engine.plan import PRESETS
from auditor.errors import UserError


def _load_config_file(ctx: click.Context, _param, path: str | None) -> None:
    """``--config file.yaml``: keys are option names (dashes or underscores); command line and env win."""
    if not path:
        return
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read config {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config {path}: expected a mapping of option names to values")
    known = {p.name for p in ctx.command.params}
    defaults = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in known or name == "config":
            raise UserError(f"config {path}: unknown option {key!r}")
        defaults[name] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def env_name(name: str) -> str:
    return "UNLEARN_AUDIT_" + name.upper().replace("-", "_")


def opt(name: str, *dest: str, **kwargs):
    """An option that also reads ``UNLEARN_AUDIT_<NAME>``."""
    return click.option(f"--{name}", *dest, envvar=env_name(name), show_envvar=True, **kwargs)


config_option = click.option(
    "--config",
    envvar=env_name("config"),
    type=click.Path(dir_okay=False),
    callback=_load_config_file,
    is_eager=True,
    expose_value=False,
    help="YAML file whose keys are option names.",
)


def _apply(options: list, func):
    for option in reversed(options):
        func = option(func)
    return func


def data_options(func):
    """The item sets: --forget, --retain (required), --holdout, --multihop, --forget-texts, --holdout-texts,
    --unrelated, --field-map."""
    return _apply(
        [
            opt("forget", required=True, type=click.Path(), help="What had to be removed (QA file)."),
            opt("retain", required=True, type=click.Path(), help="What must survive (QA file)."),
            opt(
                "holdout",
                type=click.Path(),
                help="Same-distribution items no model saw (MIA non-members; floor without a reference).",
            ),
            opt("multihop", type=click.Path(), help="Multi-hop QA about the forget subjects."),
            opt("forget-texts", type=click.Path(), help="Forget passages (verbatim probe, text MIA)."),
            opt("holdout-texts", type=click.Path(), help="Holdout passages (text MIA)."),
            opt("unrelated", type=click.Path(), help="Text unrelated to the forget set (benign fine-tuning attack)."),
            opt("field-map", help="Field mapping for QA files: question=q,answer=a,..."),
        ],
        func,
    )


def plan_options(func):
    """What runs and how it is judged: --attack, --probe, --preset, --attack-budget, --policy, --seed."""
    return _apply(
        [
            opt("attack", "attacks", multiple=True, help="NAME[:k=v,...] (repeatable); replaces the preset's attacks."),
            opt("probe", "probes", multiple=True, help="NAME[:k=v,...] (repeatable); replaces the preset's probes."),
            opt(
                "preset",
                type=click.Choice(list(PRESETS)),
                default="standard",
                show_default=True,
                help="Attacks and probes to run (`unlearn-audit list presets` shows them).",
            ),
            opt(
                "attack-budget",
                type=click.FloatRange(min=1.0),
                help="Search each attack's strength within this multiple of its planned configuration's cost (1: the "
                "plan as given, no search). Default: the preset's (4 for adaptive and thorough, else 1).",
            ),
            opt(
                "policy",
                type=click.Path(dir_okay=False),
                help="Policy YAML: thresholds, overrides, collateral limit, fail_on.",
            ),
            opt("seed", default=0, show_default=True, type=click.IntRange(min=0)),
        ],
        func,
    )


def engine_options(func):
    """Where the independent pieces run: --engine and --jobs."""
    return _apply(
        [
            opt(
                "engine",
                type=click.Choice(ENGINES),
                default="local",
                show_default=True,
                help="What runs the pieces: this process (local; several processes with --jobs), or Ray tasks "
                "(the ray extra: a local Ray instance, or the cluster RAY_ADDRESS names).",
            ),
            opt(
                "jobs",
                type=click.IntRange(min=1),
                help="Workers at once, sharing this machine's CPU threads. Default: 1 with the local engine, the "
                "CPU cores with Ray.",
            ),
        ],
        func,
    )


def workers(engine: str, jobs: int | None) -> int:
    """How many workers ``--jobs`` asks for (its default: see ``engine_options``)."""
    return jobs or (1 if engine == "local" else os.cpu_count() or 1)


def audit_data(kw: dict):
    """The item sets the data options name, read and checked."""
    from auditor.data import load_audit_data, parse_mapping

    sets = ("holdout", "multihop", "forget_texts", "holdout_texts", "unrelated")
    mapping = parse_mapping(kw["field_map"])
    return load_audit_data(kw["forget"], kw["retain"], **{name: kw[name] for name in sets}, mapping=mapping)
