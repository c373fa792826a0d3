"""Command line: ``unlearn-audit {demo,world,score,attack,probe,unlearn,audit,report,compare,list}``.

Exit codes: 0 pass, 1 gate failed, 2 usage or input error, 3 inconclusive,
4 runtime error. A ``UserError`` prints as one line; anything else as one line
too, plus the traceback when ``UNLEARN_AUDIT_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from auditor import __version__
from auditor.cli_common import EXIT_PASS, EXIT_RUNTIME, EXIT_USAGE, set_threads
from auditor.errors import UserError
from auditor.quiet import quiet_libraries


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
@click.option("--persons", default=300, show_default=True, help="Number of fictitious people.")
@click.option("--seed", default=0, show_default=True, help="Seed of the world and of the reference model.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    envvar="UNLEARN_AUDIT_CACHE",
    help="Cache root (default: ~/.cache/unlearn-audit).",
)
def world_build(persons: int, seed: int, cache_dir: str | None) -> None:
    """Build (or reuse) the world, the original and the reference model; print paths and build time."""
    from auditor.world import WorldSpec, build_world

    set_threads()
    built = build_world(WorldSpec(n_persons=persons, seed=seed), cache_dir=cache_dir, progress=click.echo)
    click.echo(f"world:     {built.root}")
    click.echo(f"data:      {built.data_dir}")
    click.echo(f"original:  {built.original}")
    click.echo(f"reference: {built.reference}")
    timings = built.build_seconds
    if timings:
        click.echo("build time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))


@cli.command("list")
@click.argument("kind", type=click.Choice(["attacks", "probes", "methods", "presets"]))
def list_plugins(kind: str) -> None:
    """List registered attacks, probes or unlearning methods, or what each audit preset runs."""
    from auditor.registry import ATTACKS, METHODS, PROBES

    if kind == "presets":
        from auditor.plan import PRESETS

        for name, preset in PRESETS.items():
            click.echo(f"{name}: {preset['seeds']} seed(s) per stochastic attack")
            click.echo(f"  attacks: {', '.join(preset['attacks'])}")
            click.echo(f"  probes:  {', '.join(preset['probes'])}")
        return
    registry = {"attacks": ATTACKS, "probes": PROBES, "methods": METHODS}[kind]
    for name in registry.names():
        cls = registry.get(name)
        missing = cls.missing_requirements()
        status = f"  [needs: {', '.join(missing)}]" if missing else ""
        tier = f" ({cls.tier})" if kind == "attacks" else ""
        click.echo(f"{name:22s}{cls.summary}{tier}{status}")


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
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # the last line of defence: one line, exit 4
        if os.environ.get("UNLEARN_AUDIT_DEBUG") == "1":
            traceback.print_exc()
        click.echo(f"runtime error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)
    sys.exit(code if isinstance(code, int) else EXIT_PASS)


def _register_commands() -> None:
    from auditor.cli_audit import audit, compare, demo, report
    from auditor.cli_tools import attack, probe, score, unlearn

    for command in (demo, audit, report, compare, score, probe, attack, unlearn):
        cli.add_command(command)


_register_commands()
