"""Run an attack once per input: its record and its adapters are cached on disk, never model copies.

The cache key covers everything the outcome depends on: the attack (class and
resolved parameters), the input model's fingerprint (the hash of its files, taken
once when it was loaded), the seed (for
stochastic attacks; the others never draw on it), the fingerprints of every data
set and the prompt format, and the versions of torch, transformers and the
attack's optional backends. An entry is a folder ``cache_dir/<key>/`` holding
``result.json`` and, for variants that are LoRA adapters on the input's weights,
each adapter under ``variants/`` (a few MB). It is written to a temporary folder
first and renamed into place, so a crash never leaves a half-written entry. An
attack whose variants are whole models (quantized copies, full fine-tunes) is
not stored: a model's weights on disk would cost more than recomputing it, and
the audit's probe results are stored anyway. Skipped results are cached too. A
hit rebuilds the adapter variants on the input and checks their weights against
the stored fingerprints (a mismatch recomputes the entry). ``keep`` saves the
attacked models for inspection (adapters as PEFT folders, whole models as
Hugging Face folders).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from auditor.lm.adapters import load_adapter, save_adapter, variant_fingerprint
from auditor.lm.memory import free_memory_of_large
from auditor.lm.models import LoadedModel, numerics, save_model
from auditor.lm.quant import dense_rtn
from auditor.plugins import Attack, AttackedVariant, AttackOutcome, RunContext
from auditor.provenance import code_digest, runtime_versions
from auditor.types import AttackResult, VariantRecord

RESULT_FILE = "result.json"
VARIANTS_DIR = "variants"


def cache_key(attack: Attack, model_fingerprint: str, ctx: RunContext) -> str:
    """sha256 of everything the attack's outcome on this model depends on, its code included."""
    data = {name: getattr(ctx.data, name).fingerprint for name in ctx.data.available()}
    payload = {
        "attack": f"{type(attack).__module__}:{type(attack).__qualname__}",
        "code": code_digest(type(attack)),
        "params": attack.params,
        "model": model_fingerprint,
        "seed": ctx.seed if attack.stochastic else None,
        "data": data,
        "prompt": ctx.prompts.key,
        "versions": runtime_versions(*attack.requires),
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
        result = _result_from_json(json.loads(result_file.read_text()))
        variants = []
        for record in result.variants:
            model, adapter = load_adapter(loaded, entry / VARIANTS_DIR / record.name, f"{loaded.spec.label}@cached")
            if variant_fingerprint(loaded.fingerprint, model.model, adapter) != record.fingerprint:
                return None
            model.fingerprint = record.fingerprint
            variants.append(AttackedVariant(model, record.name, frozenset(record.trained_groups), adapter))
    except Exception:  # an unreadable entry (any loader error): compute it again
        return None
    return AttackOutcome(result, variants, reused=True)


def _write_entry(entry: Path, outcome: AttackOutcome) -> None:
    """Write ``outcome`` (its record and adapters) to a temporary folder beside ``entry`` and rename it into place."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name[:16]}-", dir=entry.parent))
    try:
        for variant in outcome.variants:
            save_adapter(variant.adapter, staging / VARIANTS_DIR / variant.name)
        (staging / RESULT_FILE).write_text(json.dumps(dataclasses.asdict(outcome.result), indent=1, sort_keys=True))
        if entry.exists():  # a stale or corrupt entry: replace it
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(staging, entry)
        except OSError:  # another worker wrote the same entry meanwhile: a whole one stands
            if not (entry / RESULT_FILE).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def save_variant(variant: AttackedVariant, attack: Attack, loaded: LoadedModel, out: Path) -> bool:
    """Save one attacked model into ``out``: an adapter as a PEFT folder (load it with ``base=MODEL,adapter=OUT``),
    a whole model as a Hugging Face folder. False when the attack's models cannot be saved (``reloadable``)."""
    if variant.adapter is not None:
        save_adapter(variant.adapter, out)
        tokenizer: Any = loaded.tokenizer
        tokenizer.save_pretrained(out)
        return True
    if not attack.reloadable:
        return False
    dense = dataclasses.replace(variant.model, model=dense_rtn(variant.model.model))  # float weights, loadable
    save_model(dense, out, protect=tuple(p for p in (loaded.spec.path, loaded.spec.adapter) if p))
    return True


def keep_variants(outcome: AttackOutcome, attack: Attack, loaded: LoadedModel, keep: Path) -> None:
    """Save each attacked model for inspection, in ``keep/<variant name>``."""
    for variant in outcome.variants:
        save_variant(variant, attack, loaded, keep / variant.name)


def run_attack(
    attack: Attack, loaded: LoadedModel, ctx: RunContext, cache_dir: Path | None, keep: Path | None = None
) -> AttackOutcome:
    """``attack.apply(loaded, ctx)``, or its cached outcome for the same inputs; ``keep``: see the module doc.

    Only outcomes whose variants are all adapters (or none: skipped) are cached.
    What the attack left behind (a fine-tune's graphs and optimiser, in
    reference cycles) is collected before the variants are probed (from
    ``LARGE_MODEL`` parameters on).
    """
    outcome = _cached_or_applied(attack, loaded, ctx, cache_dir)
    free_memory_of_large(loaded.model)
    if keep is not None:
        keep_variants(outcome, attack, loaded, keep)
    return outcome


def _cached_or_applied(attack: Attack, loaded: LoadedModel, ctx: RunContext, cache_dir: Path | None) -> AttackOutcome:
    if cache_dir is None:
        return attack.apply(loaded, ctx)
    entry = Path(cache_dir) / cache_key(attack, loaded.fingerprint + numerics(loaded.spec), ctx)  # weights, dtype
    cached = _load_entry(entry, loaded)
    if cached is not None:
        return cached
    outcome = attack.apply(loaded, ctx)
    if all(variant.adapter is not None for variant in outcome.variants):
        _write_entry(entry, outcome)
    return outcome
