"""What can be checked of a model before any weights are loaded: its directory, config and weight files.

A missing path, a directory without a config, pickled weights (refused unless
allowed) and a truncated safetensors file are each one ``UserError`` naming
the file, raised before an audit writes anything.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

from auditor.errors import UserError
from auditor.types import ModelSpec


def _check_safetensors(path: Path) -> None:
    """Refuse a safetensors file whose header is unreadable or promises more bytes than the file holds."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            length = struct.unpack("<Q", handle.read(8))[0]
            if length > size - 8:
                raise ValueError(f"a {length}-byte header in a {size}-byte file")
            header = json.loads(handle.read(length))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as exc:
        raise UserError(f"{path} is not a readable safetensors file ({exc})") from None
    if 8 + length + max(ends, default=0) > size:
        missing = 8 + length + max(ends) - size
        raise UserError(f"{path} is truncated: its header lists {missing} more bytes of tensors than the file holds")


def _check_weights(root: Path, allow_pickle: bool) -> None:
    names = [f.name for f in root.iterdir() if f.is_file()]
    if any(n.endswith(".safetensors") for n in names):
        for name in sorted(n for n in names if n.endswith(".safetensors")):
            _check_safetensors(root / name)
        return
    pickled = [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    if pickled and not allow_pickle:
        raise UserError(
            f"no safetensors weights in {root} (found {pickled[0]}; pickled weights can run code: "
            "convert them, or pass --allow-pickle if you trust the source)"
        )
    if not pickled:
        raise UserError(f"no model weights in {root} (expected *.safetensors)")


HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def local_dir(name: str, what: str) -> Path | None:
    """The directory for ``name``, None for a hub id, UserError for a missing local path (or, offline, a hub id
    that is not in the local cache)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UserError(f"{what} {name} is a file, not a model directory")
    if not HUB_ID.match(name):
        raise UserError(f"{what} {name} does not exist")
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not _in_hub_cache(name):
        raise UserError(f"{what} {name} does not exist (no such directory, and offline no hub model of that name)")
    return None


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the local hub cache holds ``repo_id``'s config."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def check_model_files(spec: ModelSpec) -> None:
    """What can be checked of a model before loading it: its directory (and adapter's) exists and holds a config
    and readable weights. A hub id is left to the hub."""
    root = local_dir(spec.path, "model")
    if root is not None:
        _check_weights(root, spec.allow_pickle)
        if not (root / "config.json").is_file():
            raise UserError(f"{root} has no config.json: not a Hugging Face model directory")
    adapter_root = local_dir(spec.adapter, "adapter") if spec.adapter else None
    if adapter_root is not None:
        if not (adapter_root / "adapter_config.json").is_file():
            raise UserError(f"{adapter_root} has no adapter_config.json: not a PEFT adapter")
        _check_weights(adapter_root, spec.allow_pickle)
