"""A model given as a ``.gguf`` file: dequantized once into a safetensors directory, cached by the file's hash.

transformers reads GGUF files (the ``gguf`` package does the parsing) and
dequantizes them, but a model so loaded refuses ``save_pretrained``; its weights
are moved into a plain model of the same config, which is saved like any other.
Every later run, and every fingerprint, then uses that directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from auditor.errors import UserError

INSTALL_HINT = "pip install 'unlearn-audit[gguf]'"


def is_gguf(path: str) -> bool:
    return path.lower().endswith(".gguf")


def gguf_directory(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The safetensors directory of the GGUF file ``path``, converting it on first use."""
    from auditor.files import cache_root
    from auditor.lm.models import file_sha256

    source = Path(path).expanduser()
    if not source.is_file():
        raise UserError(f"GGUF file not found: {path}")
    target = cache_root(cache_dir) / "gguf" / f"{source.stem}-{file_sha256(source)[:16]}"
    if (target / "config.json").is_file():
        return target
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"reading {source.name} needs the gguf package: {INSTALL_HINT}")
    print(f"converting {source.name} to safetensors, once: {target}", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        _convert(source, staging)
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():  # not another process's finished copy: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(source: Path, out: Path) -> None:
    """Dequantize ``source`` to float32 and save it, with its tokenizer, as a Hugging Face directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"cannot read {source}: {str(exc).splitlines()[0]}") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.tie_weights()
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
