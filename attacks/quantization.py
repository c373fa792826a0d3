"""Quantization attacks: low-bit copies of a model can answer what the full-precision model "forgot".

Zhang et al. (ICLR 2025) showed that unlearning which moves weights less than a
quantization step is undone by quantizing the unlearned model. Three backends:
plain-torch round-to-nearest (always available, the grid of ``auditor.lm.quant``),
bitsandbytes int8/nf4/fp4, and GPTQ through the optional ``gptqmodel`` extra.
A backend that cannot run yields ``skipped`` with the reason, never a
full-precision model labelled quantized.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch

from attacks.common import calibration_texts, outcome, skipped, variant_label
from auditor.errors import UserError
from auditor.lm.adapters import shared_variant
from auditor.lm.memory import room_for
from auditor.lm.models import LoadedModel
from auditor.lm.quant import RTNLinear, quantizable_linears, rtn_quantize_dequantize
from auditor.plugins import Attack, AttackedVariant, AttackOutcome, RunContext
from auditor.types import ModelSpec

PAPER = "https://arxiv.org/abs/2410.16454"
STORAGES = ("auto", "compact", "dense")  # quant-rtn: how the quantized layers are held
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype_name(dtype: torch.dtype) -> str:
    return next((name for name, value in DTYPES.items() if value == dtype), "float32")


def first_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


class QuantRTN(Attack):
    """Round-to-nearest weight quantization of every decoder Linear, dequantized back to float.

    The quantized model holds new weights for those layers only; its embeddings,
    norms and output head are the input's own tensors (``shared_variant``).
    ``storage=compact`` keeps each layer's integer levels and scales and rebuilds
    its float weight at each forward pass (``RTNLinear``: the same weights, bit for
    bit, in a quarter of the memory of float32 ones, probed 2-3x slower);
    ``dense`` holds the float weights; ``auto`` is dense when four times the dense
    copy is free on the layers' device (``lm.memory.room_for``; a 135M model's
    quantized copy was probed 3.6x slower compact), else compact."""

    name = "quant-rtn"
    summary = "Round-to-nearest 8/4/3-bit weight quantization of the decoder Linear layers (plain torch)."
    paper = PAPER
    family = "quantization"
    # Finer groups and fewer bits move weights across other rounding boundaries than the planned grid; nf4 is
    # another grid again (Zhang et al.: 4-bit recovers what 8-bit does not).
    search_space = ("bits=4,group_size=32", "bits=3", "quant-bnb:mode=nf4", "bits=4,symmetric=false", "bits=8")
    defaults: ClassVar[dict[str, Any]] = {"bits": 4, "group_size": 128, "symmetric": True, "storage": "auto"}

    def validate(self) -> None:
        if not 2 <= self.params["bits"] <= 8:
            raise UserError(f"{self.name}: bits must be between 2 and 8, got {self.params['bits']}")
        if self.params["storage"] not in STORAGES:
            raise UserError(
                f"{self.name}: storage must be one of {', '.join(STORAGES)}, got {self.params['storage']!r}"
            )

    def _compact(self, modules: list[tuple[str, torch.nn.Linear]]) -> bool:
        """Compact when asked, or (``auto``) when a dense float copy of the quantized layers would not leave room
        to work in the memory free on their device."""
        if self.params["storage"] == "auto":
            weights = [linear.weight for _, linear in modules]
            dense_bytes = sum(w.numel() * w.element_size() for w in weights)
            return not room_for(dense_bytes, str(weights[0].device))
        return self.params["storage"] == "compact"

    @torch.no_grad()
    def apply(self, loaded: LoadedModel, ctx: RunContext) -> AttackOutcome:
        started = time.perf_counter()
        bits, group_size, symmetric = self.params["bits"], self.params["group_size"], self.params["symmetric"]
        copy = shared_variant(loaded, variant_label(loaded, self))  # what is not quantized stays shared
        modules = quantizable_linears(copy.model)
        if not modules:
            return skipped(self, loaded, "no Linear layers inside decoder blocks to quantize", started)
        compact = self._compact(modules)
        weights = per_channel = 0
        change = 0.0
        for name, linear in modules:
            if compact:
                quantized = RTNLinear(linear, bits, group_size, symmetric)
                change += float((quantized.weight - linear.weight).abs().sum())
                parent, _, child = name.rpartition(".")
                setattr(copy.model.get_submodule(parent), child, quantized)
            else:
                new = rtn_quantize_dequantize(linear.weight, bits, group_size, symmetric)
                change += float((new - linear.weight).abs().sum())
                linear.weight = torch.nn.Parameter(new, requires_grad=False)
            weights += linear.weight.numel()
            per_channel += int(group_size <= 0 or group_size >= linear.weight.shape[1])
        applied = {
            "backend": "torch-rtn",
            "bits": bits,
            "group_size": group_size,
            "grouping": "per output channel" if per_channel == len(modules) else f"groups of {group_size} inputs",
            "per_channel_modules": per_channel,
            "scheme": "symmetric" if symmetric else "asymmetric",
            "storage": "compact (integer levels and scales)" if compact else "dense (float weights)",
            "modules": len(modules),
            "weights": weights,
            "mean_abs_change": change / max(weights, 1),
            "excluded": "embeddings, output head, norms, Linear layers outside the decoder blocks",
        }
        return outcome(self, loaded, [AttackedVariant(copy)], applied=applied, started=started)


class QuantBnB(Attack):
    """bitsandbytes quantization through transformers' ``BitsAndBytesConfig``, from the model's tensors in memory."""

    name = "quant-bnb"
    summary = "bitsandbytes int8 / nf4 / fp4 weight quantization, loaded through transformers."
    paper = PAPER
    family = "quantization"
    search_space = ("mode=fp4", "quant-rtn:bits=4", "quant-rtn:bits=4,group_size=32", "quant-rtn:bits=3")
    requires = ("bitsandbytes",)
    defaults: ClassVar[dict[str, Any]] = {"mode": "nf4", "double_quant": False, "compute_dtype": "auto"}
    MODES: ClassVar[tuple[str, ...]] = ("int8", "nf4", "fp4")

    def validate(self) -> None:
        if self.params["mode"] not in self.MODES:
            raise UserError(f"{self.name}: mode must be one of {', '.join(self.MODES)}")
        if self.params["compute_dtype"] not in ("auto", *DTYPES):
            raise UserError(f"{self.name}: compute_dtype must be auto, {', '.join(DTYPES)}")

    def _config(self, model_dtype: torch.dtype):
        from transformers import BitsAndBytesConfig

        if self.params["mode"] == "int8":
            return BitsAndBytesConfig(load_in_8bit=True)
        compute = model_dtype if self.params["compute_dtype"] == "auto" else DTYPES[self.params["compute_dtype"]]
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.params["mode"],
            bnb_4bit_use_double_quant=self.params["double_quant"],
            bnb_4bit_compute_dtype=compute,
        )

    def apply(self, loaded: LoadedModel, ctx: RunContext) -> AttackOutcome:
        started = time.perf_counter()
        missing = self.missing_requirements()
        if missing:
            return skipped(self, loaded, f"{', '.join(missing)} is not installed", started)
        try:
            import bitsandbytes as bnb

            dtype: torch.dtype = loaded.model.dtype  # a PreTrainedModel's dtype
            config = self._config(dtype)
        except Exception as exc:  # a broken install must not stop the audit
            return skipped(self, loaded, f"bitsandbytes unusable here: {first_line(exc)}", started)
        device = loaded.device
        dtype_name, device_name = _dtype_name(dtype), str(device)
        try:
            quantized = _quantized_copy(loaded, config)
            smoke_test(quantized.model, loaded, calibration_texts(ctx.data.retain.items[:1], ctx.prompts)[0])
        except Exception as exc:
            return skipped(self, loaded, f"bitsandbytes {self.params['mode']} load failed: {first_line(exc)}", started)
        kind = bnb.nn.Linear8bitLt if self.params["mode"] == "int8" else bnb.nn.Linear4bit
        names = [name for name, module in quantized.model.named_modules() if isinstance(module, kind)]
        if not names:
            return skipped(self, loaded, f"no {kind.__name__} after loading: the model was not quantized", started)
        left = [
            name
            for name, module in quantized.model.named_modules()
            if isinstance(module, torch.nn.Linear) and not isinstance(module, kind)
        ]
        quantized.tokenizer = loaded.tokenizer
        quantized.spec = ModelSpec(variant_label(loaded, self), dtype=dtype_name, device=device_name)
        applied = {
            "backend": f"bitsandbytes {bnb.__version__}",
            "mode": self.params["mode"],
            "double_quant": self.params["double_quant"] if self.params["mode"] != "int8" else None,
            "compute_dtype": _dtype_name(config.bnb_4bit_compute_dtype) if self.params["mode"] != "int8" else "float16",
            "device": str(device),
            "module_type": kind.__name__,
            "quantized_modules": len(names),
            "quantized_names": names,
            "full_precision_linears": left,
        }
        return outcome(self, loaded, [AttackedVariant(quantized)], applied=applied, started=started)


def _quantized_copy(loaded: LoadedModel, config) -> LoadedModel:
    """``loaded`` built again from its own tensors in memory, quantized by transformers under ``config`` (nothing
    written to disk: a scratch copy's file pages once made the load hold a second model)."""
    model = type(loaded.model).from_pretrained(  # its own class: the Auto class looks for remote code at a path
        None,  # no path: the weights come from state_dict (transformers allows it)
        config=loaded.model.config,
        state_dict=loaded.model.state_dict(),
        dtype=loaded.model.dtype,
        quantization_config=config,
        device_map=str(loaded.device),
    )
    return LoadedModel(model.eval(), loaded.tokenizer, loaded.fingerprint, loaded.spec)


@torch.no_grad()
def smoke_test(model: torch.nn.Module, loaded: LoadedModel, text: str) -> None:
    """One forward pass, so a model whose kernels cannot run here is reported as skipped, not scored."""
    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"].to(loaded.device)
    logits = model(input_ids=ids).logits
    if not torch.isfinite(logits).all():
        raise RuntimeError("the quantized model gives non-finite logits")
