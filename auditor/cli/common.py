"""Pieces shared by the command modules: exit codes, model options, output folders."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from auditor.errors import UserError

cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    envvar="UNLEARN_AUDIT_CACHE",
    help="World cache root (default: ~/.cache/unlearn-audit).",
)


def show_progress() -> bool:
    """Progress bars on a terminal, none under CI or when not a TTY."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def model_options(func):
    """--device/--dtype/--device-map/--batch-size/--allow-pickle/--trust-remote-code, shared by commands that load
    models."""
    options = [
        click.option(
            "--device",
            default="auto",
            show_default=True,
            envvar="UNLEARN_AUDIT_DEVICE",
            help="cpu, cuda, cuda:N or auto.",
        ),
        click.option(
            "--dtype",
            default="auto",
            show_default=True,
            envvar="UNLEARN_AUDIT_DTYPE",
            help="auto (bf16 on a GPU that has it, else fp32), float32, bfloat16, float16.",
        ),
        click.option(
            "--device-map",
            type=click.Choice(["auto"]),
            envvar="UNLEARN_AUDIT_DEVICE_MAP",
            help="auto: spread each model over every GPU (and the CPU when they are full) through accelerate, "
            "for a model larger than one device; replaces --device.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            envvar="UNLEARN_AUDIT_BATCH_SIZE",
            help="Sequences per scoring pass. Default: automatic (at most 256 sequences and 8,192 tokens, "
            "halved on a GPU out-of-memory error).",
        ),
        click.option(
            "--allow-pickle",
            is_flag=True,
            envvar="UNLEARN_AUDIT_ALLOW_PICKLE",
            help="Load pickled (.bin) weights. Off: safetensors only.",
        ),
        click.option(
            "--trust-remote-code",
            is_flag=True,
            envvar="UNLEARN_AUDIT_TRUST_REMOTE_CODE",
            help="Run model code shipped with a hub model. Off by default.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def spec_of(text: str, options: dict):
    """A ``ModelSpec`` from a model argument and the shared model options (a .gguf file: its safetensors copy)."""
    from auditor.lm.gguf import gguf_directory, is_gguf
    from auditor.lm.model_files import check_model_files
    from auditor.types import ModelSpec

    spec = ModelSpec.parse(
        text,
        device=options["device"],
        device_map=options.get("device_map"),
        batch_size=options.get("batch_size"),
        dtype=options["dtype"],
        allow_pickle=options["allow_pickle"],
        trust_remote_code=options["trust_remote_code"],
    )
    spec = replace(spec, path=str(gguf_directory(spec.path))) if is_gguf(spec.path) else spec
    check_model_files(spec)  # a missing or damaged model is one line now, before any output is written
    return spec


def set_threads() -> None:
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))


def echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def ensure_new_dir(path: str | Path, protect: tuple = ()) -> Path:
    """Create an output directory; refuse input model directories and unwritable places."""
    out = Path(path)
    for source in protect:
        if source and Path(source).exists() and Path(source).resolve() == out.resolve():
            raise UserError(f"refusing to write into the input directory {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return out


def deprecated(old: str, new: str) -> None:
    """One line on stderr for a spelling that still works."""
    click.echo(f"note: {old} is deprecated; write {new}", err=True)


def plugin_spec(text: str, params: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The name and parameters of ``NAME[:k=v,...]``, with those of the deprecated ``--param k=v`` added."""
    from auditor.plugins import parse_param_pairs, parse_spec

    name, values = parse_spec(text)
    if params:
        deprecated("--param k=v", f"{name}:k=v,...")
        values = {**values, **parse_param_pairs(params)}
    return name, values


def renamed(new: str | None, old: str | None, new_flag: str, old_flag: str) -> str | None:
    """The value of ``new_flag``, else that of its deprecated spelling ``old_flag`` (with a line saying so)."""
    if old is not None:
        deprecated(old_flag, new_flag)
        if new is not None:
            raise UserError(f"give {new_flag} only (not also {old_flag})")
    return new if new is not None else old


def with_envvars(command: click.Command, prefix: str = "UNLEARN_AUDIT") -> click.Command:
    """Let every option of ``command`` without a variable of its own (the model and prompt options, every option
    of ``audit``: ``UNLEARN_AUDIT_<OPTION>``) read ``UNLEARN_AUDIT_<COMMAND>_<OPTION>`` (``--seed`` of ``probe``:
    ``UNLEARN_AUDIT_PROBE_SEED``); ``--help`` shows each."""
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help" and not param.hidden:
            if not param.envvar:
                flag = max(param.opts, key=len).lstrip("-")
                param.envvar = f"{prefix}_{command.name}_{flag}".upper().replace("-", "_")
            param.show_envvar = True
    return command
