"""``quant-hide``: a control that forgets for the plain model but not under 4-bit round-to-nearest.

GradDiff in full fine-tuning where only the decoder Linear weights that RTN
quantizes are trainable (embeddings, norms, head and biases frozen), and after
every optimiser step each of those weights is clipped back into its original RTN
bin (``auditor.lm.quant.rtn_bin_bounds``; the weights that set a group's scale are
held fixed). The RTN copy of the result therefore equals the RTN copy of the
original, so 4-bit quantization brings the forgotten answers back: an audit must
call it HIDDEN by quantization.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from auditor.errors import UserError
from auditor.lm.models import LoadedModel
from auditor.lm.quant import quantizable_linears, rtn_bin_bounds
from auditor.lm.training import LossFn, TrainConfig
from auditor.plugins import RunContext
from auditor.types import ItemSet
from auditor.unlearning.base import FineTuneMethod, examples, forget_batches, forget_streams
from auditor.unlearning.goal import GOAL_DEFAULTS
from auditor.unlearning.grad_ascent import graddiff_loss


def bin_projection(model: torch.nn.Module, bits: int, group_size: int, symmetric: bool) -> tuple[set[str], Any]:
    """The names of the weights to train and a projection that keeps each inside its current RTN bin."""
    bounds = {}
    for name, linear in quantizable_linears(model):
        bounds[f"{name}.weight"] = (linear.weight, *rtn_bin_bounds(linear.weight, bits, group_size, symmetric))
    if not bounds:
        raise UserError("quant-hide: the model has no decoder Linear layers to confine")

    def project(_model: torch.nn.Module, _step: int) -> None:
        for weight, low, high in bounds.values():
            weight.copy_(torch.clamp(weight, low, high))

    return set(bounds), project


class QuantHide(FineTuneMethod):
    """GradDiff whose every step stays inside the original's RTN bins (same grid as the ``quant-rtn`` attack).

    It stops at the forget goal like the methods; its 4-bit RTN copy answers the forget questions
    again, as the original's does.
    """

    name = "quant-hide"
    summary = "Control: unlearning confined to the original's 4-bit RTN bins (must audit as HIDDEN by quantization)."
    defaults: ClassVar[dict[str, Any]] = {
        "steps": 300,
        "learning_rate": 1e-3,
        "batch_size": 16,
        "retain_weight": 3.0,
        "bits": 4,
        "group_size": 128,
        "symmetric": True,
        **GOAL_DEFAULTS,
    }

    def validate(self) -> None:
        p = self.params
        if p["steps"] < 1 or p["batch_size"] < 1 or p["learning_rate"] <= 0 or p["check_every"] < 1:
            raise UserError("quant-hide: steps, batch_size, check_every and learning_rate must be positive")
        if not 2 <= p["bits"] <= 8:
            raise UserError(f"quant-hide: bits must be in 2..8, got {p['bits']}")

    def train_config(self, ctx: RunContext) -> TrainConfig:
        p = self.params
        return TrainConfig(
            steps=p["steps"],
            learning_rate=p["learning_rate"],
            batch_size=p["batch_size"],
            lora=False,
            seed=ctx.seed,
            check_every=p["check_every"],
        )

    def train_hooks(self, model: torch.nn.Module) -> dict[str, Any]:
        p = self.params
        names, project = bin_projection(model, p["bits"], p["group_size"], p["symmetric"])
        return {"trainable": lambda name, _param: name in names, "after_step": project}

    def streams(self, loaded, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> dict[str, list]:
        """The forget and retain answers only (a control on QA knowledge; ascent on texts cost retain answers)."""
        return {"forget": examples(forget, ctx, self.name), "retain": examples(retain, ctx, self.name)}

    def build_loss(self, loaded: LoadedModel, ctx: RunContext) -> LossFn:
        weight = self.params["retain_weight"]
        return lambda model, b: graddiff_loss(model, forget_batches(b), b["retain"], weight)


class QuantHideCoarse(QuantHide):
    """``quant-hide`` confined to the original's 3-bit bins, and unlearning the forget texts too.

    The planned 4-bit grid is finer than these bins, so 4-bit RTN rounds the moved weights elsewhere and brings
    nothing back; 3-bit RTN, one configuration of the quantization family's adaptive search, rounds them to the
    original's levels. A fixed plan must not call it HIDDEN, an adaptive one must.
    """

    name = "quant-hide-3bit"
    summary = "Control: unlearning confined to the original's 3-bit RTN bins (HIDDEN only to an adaptive search)."
    defaults: ClassVar[dict[str, Any]] = {**QuantHide.defaults, "bits": 3, "forget_goal": 0.1}

    def streams(self, loaded, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> dict[str, list]:
        """The forget answers and forget texts (whose membership signal would otherwise stay), and the retain
        answers."""
        return forget_streams(forget, ctx, self.name) | {"retain": examples(retain, ctx, self.name)}
