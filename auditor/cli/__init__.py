"""Command line: ``unlearn-audit {demo,world,score,attack,probe,unlearn,audit,campaign,report,compare,list}``.

Exit codes: 0 pass, 1 gate failed, 2 usage or input error, 3 inconclusive,
4 runtime error. A ``UserError`` prints as one line; anything else as one line
too, plus the traceback when ``UNLEARN_AUDIT_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
import traceback

# Before torch loads: idle OpenMP threads sleep instead of spinning, which made one command 5x slower
# on 2 shared cores (348 s against 71 s). A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click  # noqa: E402

from auditor import __version__  # noqa: E402
from auditor.cli.common import cache_dir_option, set_threads, with_envvars
from auditor.errors import EXIT_PASS, EXIT_RUNTIME, EXIT_USAGE, UserError
from auditor.lm.quiet import quiet_libraries
from auditor.world.spec import WorldSpec


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="unlearn-audit")
def cli() -> None:
    """Audit an unlearned language model: is the knowledge removed, or only hidden?

    Attacks (quantization, relearning fine-tunes) and probes (direct, paraphrased,
    multi-hop, in-context, verbatim, membership inference) are run against the
    unlearned model and a never-trained reference; the residual knowledge of each
    attack x probe cell decides the verdict.
    """


@cli.group()
def world() -> None:
    """The embedded synthetic world and its tiny models (no download needed)."""


@world.command("build")
@click.option("--persons", default=WorldSpec.n_persons, show_default=True, help="Number of fictitious people.")
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seed of the world and of the reference model.",
)
@cache_dir_option
@click.option(
    "--rebuild",
    is_flag=True,
    help="Train from the recipe (minutes) instead of using the shipped models, and compare what they know.",
)
@click.option("--ship", is_flag=True, help="With --rebuild: replace the package's shipped models (maintainers).")
def world_build(persons: int, seed: int, cache_dir: str | None, rebuild: bool, ship: bool) -> None:
    """Install (or reuse) the world and its models; print paths.

    The default world's models are shipped with the package, so every machine
    audits the same weights; other --persons/--seed values train from the recipe.
    """
    from auditor.world import WorldSpec, build_world
    from auditor.world.shipped import SHIPPED_RETRAINS, comparison_table, knowledge, read_manifest
    from auditor.world.shipped import ship as ship_world

    if ship and not rebuild:
        raise UserError("--ship needs --rebuild: only freshly trained models are shipped")
    set_threads()
    spec = WorldSpec(n_persons=persons, seed=seed)
    retrains = SHIPPED_RETRAINS if rebuild else ()
    built = build_world(spec, cache_dir=cache_dir, progress=click.echo, retrains=retrains, from_scratch=rebuild)
    click.echo(f"world:     {built.root}")
    click.echo(f"data:      {built.data_dir}")
    click.echo(f"original:  {built.original}")
    click.echo(f"reference: {built.reference}")
    click.echo("training time: " + ", ".join(f"{k} {v:.1f} s" for k, v in built.build_seconds.items()))
    if rebuild:
        manifest = read_manifest()
        shipped = manifest["knowledge"] if manifest and manifest["fingerprint"] == spec.fingerprint() else {}
        rebuilt = knowledge(built)
        click.echo("greedy QA accuracy, shipped models against the rebuilt ones:")
        click.echo(comparison_table(shipped, rebuilt))
    if ship:
        ship_world(built, rebuilt)
        click.echo("shipped: auditor/world/shipped now holds these models")


@cli.command("list")
@click.argument("kind", type=click.Choice(["attacks", "probes", "methods", "presets"]))
def list_plugins(kind: str) -> None:
    """List registered attacks, probes or unlearning methods (with the paper each follows), or what each audit
    preset runs."""
    from auditor.registry import ATTACKS, METHODS, PROBES

    if kind == "presets":
        from auditor.engine.plan import PRESETS

        for name, preset in PRESETS.items():
            budget = preset.get("budget", 1.0)
            search = f", each attack searched within {budget:g}x its cost" if budget > 1 else ""
            click.echo(f"{name}: {preset['seeds']} seed(s) per stochastic attack{search}")
            click.echo(f"  attacks: {', '.join(preset['attacks'])}")
            click.echo(f"  probes:  {', '.join(preset['probes'])}")
            if preset.get("choice_probes"):
                click.echo(f"           + {', '.join(preset['choice_probes'])} when the forget items have choices")
        return
    registry = {"attacks": ATTACKS, "probes": PROBES, "methods": METHODS}[kind]
    for name in registry.names():
        cls = registry.get(name)
        missing = cls.missing_requirements()
        status = f"  [needs: {', '.join(missing)}]" if missing else ""
        tier = f" ({cls.tier})" if kind == "attacks" else ""
        click.echo(f"{name:22s}{cls.summary}{tier}{status}")
        if cls.paper:
            click.echo(f"{'':22s}paper: {cls.paper}")
        if kind == "attacks":
            click.echo(f"{'':22s}family: {cls.family_name()}; {search_space_text(name)}")


def search_space_text(name: str) -> str:
    """What an attack's adaptive search tries, each configuration with its cost relative to the defaults'."""
    from auditor.engine.plan import parse_attack, plan_search

    search = plan_search(parse_attack(name), float("inf"))
    if search is None:
        return "no adaptive search (a fixed configuration)"
    tried = ", ".join(f"{c.id} ({cost:g})" for c, cost in zip(search.configs[1:], search.costs[1:], strict=True))
    return f"adaptive search, cheapest first (cost relative to the defaults): {tried}"


def main() -> None:
    """Console entry point: map errors to exit codes."""
    quiet_libraries()
    try:
        code = cli.main(standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_RUNTIME)
    except click.ClickException as exc:  # usage errors: one line, as every input error
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # the last line of defence: one line, exit 4
        if os.environ.get("UNLEARN_AUDIT_DEBUG") == "1":
            traceback.print_exc()
        click.echo(f"runtime error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)
    sys.exit(code if isinstance(code, int) else EXIT_PASS)


def _register_commands() -> None:
    from auditor.cli.audit import audit, compare, demo, report
    from auditor.cli.campaign import campaign
    from auditor.cli.tools import attack, probe, score, unlearn

    for command in (demo, audit, campaign, report, compare, score, probe, attack, unlearn):
        cli.add_command(with_envvars(command))
    with_envvars(world_build, prefix="UNLEARN_AUDIT_WORLD")


_register_commands()
