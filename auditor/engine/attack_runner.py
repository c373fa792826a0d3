"""Run an attack once per input: results and the models they produced are cached on disk.

The cache key covers everything the outcome depends on: the attack (class and
resolved parameters), the hash of the input model's weights, the seed (for
stochastic attacks; the others never draw on it), the fingerprints of every data
set and the prompt format, and the versions of torch, transformers and the
attack's optional backends. An entry is a folder ``cache_dir/<key>/`` holding
``result.json`` and one Hugging Face safetensors directory per variant under
``variants/``, written to a temporary folder first and renamed into place, so a
crash never leaves a half-written entry. Skipped results are cached too. A hit
reloads the variants through ``auditor.lm.models.load_model`` and checks their
weights against the stored fingerprints (a mismatch recomputes the entry).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from auditor.lm.models import LoadedModel, fingerprint_module, load_model, save_model
from auditor.plugins import Attack, AttackedVariant, AttackOutcome, RunContext
from auditor.types import AttackResult, ModelSpec, VariantRecord

RESULT_FILE = "result.json"
VARIANTS_DIR = "variants"
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "missing"


def cache_key(attack: Attack, model_fingerprint: str, ctx: RunContext) -> str:
    """sha256 of everything the attack's outcome on this model depends on."""
    data = {name: getattr(ctx.data, name).fingerprint for name in ctx.data.available()}
    payload = {
        "attack": f"{type(attack).__module__}:{type(attack).__qualname__}",
        "params": attack.params,
        "model": model_fingerprint,
        "seed": ctx.seed if attack.stochastic else None,
        "data": data,
        "prompts": [ctx.prompts.template, ctx.prompts.answer_prefix],
        "versions": {name: _version(name) for name in ("unlearn-audit", "torch", "transformers", *attack.requires)},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _result_from_json(record: dict) -> AttackResult:
    variants = tuple(
        VariantRecord(v["name"], v["fingerprint"], tuple(v["trained_groups"])) for v in record.pop("variants")
    )
    return AttackResult(**record, variants=variants)


def _load_entry(entry: Path, loaded: LoadedModel) -> AttackOutcome | None:
    """The cached outcome in ``entry``, or None if it is missing or its weights no longer match."""
    result_file = entry / RESULT_FILE
    if not result_file.is_file():
        return None
    try:
        stored = json.loads(result_file.read_text())
        dtypes = stored.pop("dtypes")
        result = _result_from_json(stored)
        variants = []
        for record in result.variants:
            path = entry / VARIANTS_DIR / record.name
            model = load_model(ModelSpec(str(path), dtype=dtypes[record.name], device=str(loaded.device)))
            if fingerprint_module(model.model) != record.fingerprint:
                return None
            model.fingerprint = record.fingerprint
            variants.append(AttackedVariant(model, record.name, frozenset(record.trained_groups)))
    except Exception:  # an unreadable entry (any loader error): compute it again
        return None
    return AttackOutcome(result, variants, reused=True)


def _write_entry(entry: Path, outcome: AttackOutcome, protect: tuple[str, ...]) -> None:
    """Write ``outcome`` to a temporary folder beside ``entry`` and rename it into place."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name[:16]}-", dir=entry.parent))
    try:
        dtypes = {}
        for variant in outcome.variants:
            save_model(variant.model, staging / VARIANTS_DIR / variant.name, protect=protect)
            dtypes[variant.name] = DTYPE_NAMES.get(variant.model.model.dtype, "float32")
        record = {**dataclasses.asdict(outcome.result), "dtypes": dtypes}
        (staging / RESULT_FILE).write_text(json.dumps(record, indent=1, sort_keys=True))
        if entry.exists():  # a stale or corrupt entry: replace it
            shutil.rmtree(entry)
        os.replace(staging, entry)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def run_attack(attack: Attack, loaded: LoadedModel, ctx: RunContext, cache_dir: Path | None) -> AttackOutcome:
    """``attack.apply(loaded, ctx)``, or its cached outcome for the same inputs.

    Results of attacks whose models cannot be reloaded as Hugging Face directories
    (``reloadable = False``, e.g. GPTQ) are cached only when skipped.
    """
    if cache_dir is None:
        return attack.apply(loaded, ctx)
    entry = Path(cache_dir) / cache_key(attack, fingerprint_module(loaded.model), ctx)
    cached = _load_entry(entry, loaded)
    if cached is not None:
        return cached
    outcome = attack.apply(loaded, ctx)
    if outcome.result.status == "skipped" or attack.reloadable:
        protect = tuple(p for p in (loaded.spec.path, loaded.spec.adapter) if p)
        _write_entry(entry, outcome, protect)
    return outcome
