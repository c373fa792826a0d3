"""LoRA variants on a shared base: a fine-tuned variant costs an adapter, not a copy of the model.

A variant is a *shared copy* of the input model (a new module tree whose
parameters and buffers are the input's own tensors) with peft's LoRA layers
injected into that tree. The input never changes: peft replaces modules of the
copy's tree only, the base weights stay frozen and nothing is merged. Two folds
of ``relearn-forget`` therefore hold one base and two adapters, where deep
copies with merged adapters held three models. Only the adapter is saved
(``save_adapter``), and a variant is rebuilt from its input and that folder
(``load_adapter``). Probes read ``serving_model``: a merged copy, faster to run,
where memory has room for one, else the shared tree.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from pathlib import Path

import torch

from auditor.lm.memory import room_for
from auditor.lm.models import LoadedModel, fingerprint_module, fingerprint_tensors


def shared_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module``'s tree that shares every parameter and buffer with it (no weight memory)."""
    memo = {id(tensor): tensor for tensor in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo)


def shared_variant(loaded: LoadedModel, label: str) -> LoadedModel:
    """``loaded`` on a shared copy of its weights, labelled ``label``: ready for an adapter."""
    return LoadedModel(
        shared_copy(loaded.model), loaded.tokenizer, loaded.fingerprint, replace(loaded.spec, path=label)
    )


def serving_model(peft_model) -> torch.nn.Module:
    """The module probes question: a merged copy of the variant where memory has room for one
    (``lm.memory.room_for``), else the adapter's own layers on the shared base. peft's per-layer Python made
    probing the embedded world's 656k-parameter models 4x slower than a merged copy."""
    base = peft_model.get_base_model()
    weights = sum(t.numel() * t.element_size() for t in base.parameters())
    if not room_for(weights, str(next(base.parameters()).device)):
        return base
    return copy.deepcopy(peft_model).merge_and_unload().eval()


def adapter_bytes(peft_model) -> int:
    """Bytes of the adapter's own weights (what a variant adds to its base)."""
    from peft import get_peft_model_state_dict

    return sum(t.numel() * t.element_size() for t in get_peft_model_state_dict(peft_model).values())


def variant_fingerprint(base_fingerprint: str, model: torch.nn.Module, adapter=None) -> str:
    """An attacked model's fingerprint: its base's and its adapter's weights for an adapter variant (the base is
    never hashed again), else the hash of all its weights."""
    if adapter is None:
        return fingerprint_module(model)
    from peft import get_peft_model_state_dict

    return fingerprint_tensors(get_peft_model_state_dict(adapter), prefix=base_fingerprint)


def save_adapter(peft_model, out_dir: Path) -> None:
    """The adapter alone (safetensors and its config), a few MB where the model is GBs."""
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    (Path(out_dir) / "README.md").unlink(missing_ok=True)  # peft's blank model card


def load_adapter(loaded: LoadedModel, adapter_dir: Path, label: str):
    """The variant saved by ``save_adapter``, rebuilt on a shared copy of ``loaded``: (variant, peft model)."""
    from peft import PeftModel

    variant = shared_variant(loaded, label)
    peft_model = PeftModel.from_pretrained(variant.model, str(adapter_dir), is_trainable=False).eval()
    variant.model = serving_model(peft_model)
    return variant, peft_model
