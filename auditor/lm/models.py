"""The only place that loads weights: safetensors only, remote code off, fingerprints.

Every model the auditor touches goes through ``load_model``; attacks get an
in-memory copy (``clone``) and save their outputs elsewhere (``save_model``),
so input directories are never written.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from auditor.errors import UserError
from auditor.lm.ledger import watch
from auditor.lm.memory import LARGE_MODEL, tune_allocator
from auditor.lm.model_files import check_model_files, local_dir
from auditor.types import ModelSpec

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
FINGERPRINTED = ("config.json", "adapter_config.json", "tokenizer.json")


@dataclass
class LoadedModel:
    """A model, its tokenizer, and the fingerprint of what it was loaded from."""

    model: torch.nn.Module
    tokenizer: object
    fingerprint: str
    spec: ModelSpec
    prompt_edit: Callable[[str], str] | None = None  # a prompt-level attack's change to every question it is asked

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but CUDA is not available here")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on a GPU that supports it, else float32."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise UserError(f"unknown dtype {dtype!r} (use auto, float32, bfloat16 or float16)") from None


def numerics(*specs: ModelSpec | None) -> str:
    """The dtypes and device kinds ``specs`` run in (``float32@cpu``): part of every cache key, since the same
    weights give other figures in bfloat16 or on a GPU."""
    kinds = set()
    for spec in filter(None, specs):
        device = torch.device("cuda") if spec.device_map else resolve_device(spec.device)
        kinds.add(f"{str(resolve_dtype(spec.dtype, device)).removeprefix('torch.')}@{device.type}")
    return ",".join(sorted(kinds))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


UNFINGERPRINTED_KEYS = ("transformers_version",)  # config keys that say who saved a model, not what it computes


def _content_sha256(file: Path) -> str:
    """sha256 of a file's bytes; of a JSON config's content without ``UNFINGERPRINTED_KEYS``, so that a copy
    saved by another transformers release is the same model (and reuses its audit pieces)."""
    if file.suffix == ".json" and file.name != "tokenizer.json":
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return file_sha256(file)
        if isinstance(config, dict):
            kept = {key: value for key, value in config.items() if key not in UNFINGERPRINTED_KEYS}
            return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()
    return file_sha256(file)


def fingerprint_dir(path: str | Path) -> str:
    """sha256 over the weight files and config of a model or adapter directory."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(root.iterdir()):
        if file.is_file() and (file.suffix in WEIGHT_SUFFIXES or file.name in FINGERPRINTED):
            digest.update(file.name.encode())
            digest.update(_content_sha256(file).encode())
    return digest.hexdigest()


def fingerprint_module(model: torch.nn.Module) -> str:
    """sha256 over the names and bytes of every tensor in a model's state dict."""
    return fingerprint_tensors(model.state_dict())


def fingerprint_tensors(tensors: dict[str, torch.Tensor], prefix: str = "") -> str:
    """sha256 over ``prefix`` and the names and bytes of ``tensors``, in name order."""
    digest = hashlib.sha256(prefix.encode())
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _hub_options(spec: ModelSpec) -> dict:
    return {
        "revision": spec.revision,
        "trust_remote_code": spec.trust_remote_code,
        "local_files_only": os.environ.get("HF_HUB_OFFLINE") == "1",
    }


_TOKENIZERS: OrderedDict = OrderedDict()  # the last TOKENIZERS_KEPT tokenizers loaded, by source and file stamps
TOKENIZERS_KEPT = 8


def _stamps(source: str) -> tuple:
    """Name, size and modification time of each file in a local ``source`` (a changed file is another key);
    nothing for a hub id, which ``revision`` pins."""
    root = Path(source)
    if not root.is_dir():
        return ()
    return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in root.iterdir() if f.is_file()))


def load_tokenizer(spec: ModelSpec):
    """The tokenizer of the adapter directory if it has one, else of the base. Loaded once per process and
    files (0.2 s each; an audit asks for its models' tokenizers several times, a campaign for the same ones in
    every audit); nothing the auditor does changes a tokenizer."""
    from transformers import AutoTokenizer

    check_model_files(spec)
    source = spec.path
    if spec.adapter and (Path(spec.adapter) / "tokenizer_config.json").is_file():
        source = spec.adapter
    options = _hub_options(spec)
    key = (str(Path(source).resolve()) if Path(source).is_dir() else source, _stamps(source), *options.values())
    if key in _TOKENIZERS:
        _TOKENIZERS.move_to_end(key)
        return _TOKENIZERS[key]
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the tokenizer of {source}: {str(exc).splitlines()[0]}") from None
    _TOKENIZERS[key] = tokenizer
    if len(_TOKENIZERS) > TOKENIZERS_KEPT:
        _TOKENIZERS.popitem(last=False)
    return tokenizer


def load_model(spec: ModelSpec, *, quantization_config=None) -> LoadedModel:
    """Load ``spec`` for scoring: eval mode, adapter merged, fingerprinted.

    ``quantization_config`` (e.g. a ``BitsAndBytesConfig``) loads the weights quantized,
    placed on the spec's device at load time.
    """
    from transformers import AutoModelForCausalLM

    check_model_files(spec)
    root = local_dir(spec.path, "model")
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    tokenizer = load_tokenizer(spec)
    try:
        options = _hub_options(spec)
        if quantization_config is not None:
            options.update(quantization_config=quantization_config, device_map=spec.device_map or str(device))
        elif spec.device_map:
            options.update(device_map=spec.device_map)  # accelerate places the layers, at load time
        model = AutoModelForCausalLM.from_pretrained(
            spec.path, dtype=dtype, use_safetensors=not spec.allow_pickle, **options
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model {spec.path}: {str(exc).splitlines()[0]}") from None
    fingerprint = fingerprint_dir(root) if root is not None else f"hub:{spec.path}@{spec.revision or 'main'}"
    if spec.adapter:
        model, adapter_fp = _merge_adapter(model, spec)
        fingerprint = hashlib.sha256(f"{fingerprint}+{adapter_fp}".encode()).hexdigest()
    if quantization_config is None and not spec.device_map:
        model.to(device)  # type: ignore[arg-type]  # transformers types .to() for its own models only
    if sum(p.numel() for p in model.parameters()) >= LARGE_MODEL:
        tune_allocator()
    model.eval()
    return LoadedModel(watch(model), tokenizer, fingerprint, spec)


def _merge_adapter(model: torch.nn.Module, spec: ModelSpec) -> tuple[torch.nn.Module, str]:
    from peft import PeftModel

    assert spec.adapter is not None  # called only for a spec with an adapter
    adapter_root = local_dir(spec.adapter, "adapter")
    try:
        peft_model = PeftModel.from_pretrained(model, spec.adapter, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"adapter {spec.adapter} does not fit base {spec.path}: {first}") from None
    fingerprint = fingerprint_dir(adapter_root) if adapter_root is not None else f"hub:{spec.adapter}"
    return peft_model.merge_and_unload(), fingerprint


def clone(loaded: LoadedModel, label: str | None = None) -> LoadedModel:
    """An in-memory copy that an attack may change freely."""
    spec = replace(loaded.spec, path=label) if label else loaded.spec
    return LoadedModel(copy.deepcopy(loaded.model), loaded.tokenizer, loaded.fingerprint, spec)


def save_model(loaded: LoadedModel, out_dir: str | Path, *, protect: tuple[str | Path, ...] = ()) -> str:
    """Save as a Hugging Face directory (safetensors) and return its fingerprint.

    Refuses to write into the loaded model's own directory or any of ``protect``.
    """
    out = Path(out_dir).resolve()
    sources = [loaded.spec.path, loaded.spec.adapter, *protect]
    for source in sources:
        if source and Path(source).exists() and Path(source).resolve() == out:
            raise UserError(f"refusing to write into the source model directory {out}")
    out.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(out, safe_serialization=True)
    loaded.tokenizer.save_pretrained(out)
    return fingerprint_dir(out)


def _tokenizer_signature(tokenizer) -> str:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    special = json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id])
    return hashlib.sha256((vocab + special).encode()).hexdigest()


def check_compatible(reference: LoadedModel, other: LoadedModel, what: str) -> None:
    """Raise ``UserError`` when ``other`` cannot be compared with ``reference``."""
    _check_comparable(reference.model.config, reference.tokenizer, other.model.config, other.tokenizer, what)


def check_comparable_files(reference: ModelSpec, other: ModelSpec, what: str) -> None:
    """``check_compatible`` from the models' configs and tokenizers alone, before any weights are loaded."""
    from transformers import AutoConfig

    configs = []
    for spec in (reference, other):
        try:
            configs.append(AutoConfig.from_pretrained(spec.path, **_hub_options(spec)))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the config of {spec.path}: {str(exc).splitlines()[0]}") from None
    _check_comparable(configs[0], load_tokenizer(reference), configs[1], load_tokenizer(other), what)


def _check_comparable(a, tokenizer_a, b, tokenizer_b, what: str) -> None:
    if (a.model_type, a.vocab_size, a.hidden_size, getattr(a, "num_hidden_layers", None)) != (
        b.model_type,
        b.vocab_size,
        b.hidden_size,
        getattr(b, "num_hidden_layers", None),
    ):
        raise UserError(
            f"architectures differ: original is {a.model_type} (hidden {a.hidden_size}, vocab {a.vocab_size}), "
            f"{what} is {b.model_type} (hidden {b.hidden_size}, vocab {b.vocab_size})"
        )
    if _tokenizer_signature(tokenizer_a) != _tokenizer_signature(tokenizer_b):
        raise UserError(f"tokenizers differ between the original and the {what} model")
