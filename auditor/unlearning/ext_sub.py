"""Extraction-before-Subtraction (Ext-Sub, Hu et al., AAAI 2024) of a forget-set LoRA from a retain-set LoRA.

Two LoRA adapters are trained from the original: an expert on the retain answers
and an anti-expert on the forget answers. For every weight both adapt, their
deltas ``W+ = B+ A+ * scaling`` and ``W- = B- A- * scaling`` are combined row by
row (``extsub_rows``): the sum of the two rows' unit vectors is their general
direction, the anti-expert row's projection on it is the general capability both
share, and only the rest, the deficiency part ``Ext(v-)``, is subtracted:
``v+ - lambda * Ext(v-)``. ``mode=negate`` subtracts the whole anti-expert
instead (``W+ - lambda * W-``, plain task-vector negation). The result is added
to the original weights.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch

from auditor.errors import UserError
from auditor.models import LoadedModel, clone
from auditor.plugins import RunContext, UnlearnOutcome
from auditor.training import train
from auditor.types import ItemSet
from auditor.unlearning.base import TRAIN_DEFAULTS, FineTuneMethod, examples, finish

PAPER = (
    "Hu et al., AAAI 2024, Separate the Wheat from the Chaff: "
    "Model Deficiency Unlearning via Parameter-Efficient Module Operation"
)
EPS = 1e-12


def deficiency_part(v_plus: torch.Tensor, v_minus: torch.Tensor) -> torch.Tensor:
    """Ext(v-) row by row: the anti-expert rows minus their projection on the general direction."""
    u_plus = v_plus / v_plus.norm(dim=-1, keepdim=True).clamp(min=EPS)
    u_minus = v_minus / v_minus.norm(dim=-1, keepdim=True).clamp(min=EPS)
    general = u_plus + u_minus
    coeff = (v_minus * general).sum(-1, keepdim=True) / (general * general).sum(-1, keepdim=True).clamp(min=EPS)
    return v_minus - coeff * general


def extsub_rows(w_plus: torch.Tensor, w_minus: torch.Tensor, lam: float) -> torch.Tensor:
    """Ext-Sub of two delta matrices ``[out, in]``: each row ``v+ - lam * Ext(v-)``."""
    return w_plus - lam * deficiency_part(w_plus, w_minus)


def lora_deltas(peft_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each adapted module's weight delta (``B A * scaling``), keyed by the module's name in the base model."""
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    deltas = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            deltas[name.removeprefix(prefix)] = module.get_delta_weight("default").detach()
    return deltas


class ExtSub(FineTuneMethod):
    """Expert (retain) and anti-expert (forget) LoRAs combined by Ext-Sub or plain negation.

    Defaults tuned on the embedded world (recipe 4): forget 1.00 -> 0.38, retain 1.00 -> 0.91.
    """

    name = "ext-sub"
    summary = "Extraction-before-Subtraction of a forget-set LoRA from a retain-set LoRA."
    paper = PAPER
    defaults: ClassVar[dict[str, Any]] = {
        **{key: value for key, value in TRAIN_DEFAULTS.items() if key != "lora"},  # adapters are the method
        "steps": 120,
        "learning_rate": 2e-3,
        "lam": 4.0,  # weight of the subtracted part
        "mode": "extsub",  # extsub | negate
    }

    def validate(self) -> None:
        super().validate()
        if self.params["mode"] not in ("extsub", "negate"):
            raise UserError(f"ext-sub: mode must be extsub or negate, got {self.params['mode']!r}")

    def _adapter(self, loaded: LoadedModel, stream: list, ctx: RunContext) -> tuple[dict[str, torch.Tensor], dict]:
        config = self.train_config(ctx)
        config.merge_lora = False
        report = train(clone(loaded).model, loaded.tokenizer, {"train": stream}, config, progress=ctx.progress)
        return lora_deltas(report.model), report.cost

    def unlearn(self, loaded: LoadedModel, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> UnlearnOutcome:
        start = time.perf_counter()
        p = self.params
        expert, expert_cost = self._adapter(loaded, examples(retain, ctx, self.name), ctx)
        anti, anti_cost = self._adapter(loaded, examples(forget, ctx, self.name), ctx)
        work = clone(loaded).model
        modules = dict(work.named_modules())
        changed = 0
        with torch.no_grad():
            for name in sorted(expert.keys() & anti.keys()):
                if p["mode"] == "extsub":
                    delta = extsub_rows(expert[name], anti[name], p["lam"])
                else:
                    delta = expert[name] - p["lam"] * anti[name]
                weight = modules[name].weight
                weight.add_(delta.to(weight.dtype))
                changed += 1
        if not changed:
            raise UserError("ext-sub: the two adapters share no weight matrix")
        info = {
            "method": self.name,
            "params": dict(p),
            "seed": ctx.seed,
            "modules_changed": changed,
            "cost": {
                "expert": expert_cost,
                "anti_expert": anti_cost,
                "total_seconds": round(time.perf_counter() - start, 3),
            },
        }
        return finish(loaded, work, info)
