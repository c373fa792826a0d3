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

from auditor.data import sample_items
from auditor.errors import UserError
from auditor.lm.knowledge import qa_accuracy
from auditor.lm.models import LoadedModel, clone
from auditor.lm.training import train
from auditor.plugins import RunContext, UnlearnOutcome
from auditor.types import ItemSet
from auditor.unlearning.base import TRAIN_DEFAULTS, FineTuneMethod, examples, finish
from auditor.unlearning.goal import forget_goal

PAPER = (
    "Hu et al., AAAI 2024, Separate the Wheat from the Chaff: "
    "Model Deficiency Unlearning via Parameter-Efficient Module Operation"
)
EPS = 1e-12
RETAIN_CHECK_ITEMS = 1000  # retain items (at most) answered for each subtraction weight tried


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

    The adapters train for ``steps``; the subtraction weight then rises in ``lam_steps`` equal
    steps up to ``lam`` and stops at the first weight that meets the forget goal, or before the
    first that costs more retain accuracy than ``retain_floor`` allows (on the retain set, or a sample of
    ``RETAIN_CHECK_ITEMS`` of it).
    """

    name = "ext-sub"
    summary = "Extraction-before-Subtraction of a forget-set LoRA from a retain-set LoRA."
    paper = PAPER
    defaults: ClassVar[dict[str, Any]] = {
        **{key: value for key, value in TRAIN_DEFAULTS.items() if key not in ("lora", "check_every")},
        "steps": 200,  # of each adapter
        "learning_rate": 2e-3,
        "lam": 8.0,  # largest weight of the subtracted part
        "lam_steps": 16,  # weights tried: lam * k / lam_steps for k = 1, 2, ...
        "retain_floor": 0.85,  # never a weight whose retain accuracy falls under this share of the input's
        "mode": "extsub",  # extsub | negate
    }

    def validate(self) -> None:
        super().validate()
        if self.params["mode"] not in ("extsub", "negate"):
            raise UserError(f"ext-sub: mode must be extsub or negate, got {self.params['mode']!r}")
        if self.params["lam"] <= 0 or self.params["lam_steps"] < 1 or not 0 <= self.params["retain_floor"] <= 1:
            raise UserError("ext-sub: lam and lam_steps must be positive, retain_floor in [0, 1]")

    def _adapter(self, loaded: LoadedModel, stream: list, ctx: RunContext) -> tuple[dict[str, torch.Tensor], dict]:
        config = self.train_config(ctx)
        config.merge_lora = False
        report = train(clone(loaded).model, loaded.tokenizer, {"train": stream}, config, progress=ctx.progress)
        return lora_deltas(report.model), report.cost

    def _combine(self, loaded: LoadedModel, expert: dict, anti: dict, lam: float) -> torch.nn.Module:
        """A copy of the original plus the combined delta of every weight both adapters changed."""
        work = clone(loaded).model
        modules = dict(work.named_modules())
        with torch.no_grad():
            for name in sorted(expert.keys() & anti.keys()):
                if self.params["mode"] == "extsub":
                    delta = extsub_rows(expert[name], anti[name], lam)
                else:
                    delta = expert[name] - lam * anti[name]
                weight = modules[name].weight
                weight.add_(delta.to(weight.dtype))
        return work

    def unlearn(self, loaded: LoadedModel, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> UnlearnOutcome:
        start = time.perf_counter()
        p = self.params
        expert, expert_cost = self._adapter(loaded, examples(retain, ctx, self.name), ctx)
        # The anti-expert learns the forget answers only: with the forget texts as well it also subtracted general
        # ability (on the embedded world, retain accuracy fell under 0.80 before forget accuracy reached 0.50).
        anti, anti_cost = self._adapter(loaded, examples(forget, ctx, self.name), ctx)
        if not expert.keys() & anti.keys():
            raise UserError("ext-sub: the two adapters share no weight matrix")
        goal = forget_goal(loaded, forget, ctx, p)
        weights = [p["lam"] * k / p["lam_steps"] for k in range(1, p["lam_steps"] + 1)] if goal else [p["lam"]]
        guard = sample_items(retain, RETAIN_CHECK_ITEMS, ctx.seed)
        retain_floor = p["retain_floor"] * qa_accuracy(loaded, guard, ctx.prompts)
        lam, stop_reason = weights[0], "largest lam used"
        work: torch.nn.Module | None = None
        for k, weight in enumerate(weights, start=1):
            candidate = self._combine(loaded, expert, anti, weight)
            kept = qa_accuracy(LoadedModel(candidate, loaded.tokenizer, "candidate", loaded.spec), guard, ctx.prompts)
            if work is not None and kept < retain_floor:
                stop_reason = f"retain floor: lam {weight:g} keeps retain accuracy {kept:.2f} < {retain_floor:.2f}"
                break
            lam, work = weight, candidate
            reason = goal(candidate, k) if goal else None
            if reason:
                stop_reason = f"{reason} (lam {weight:g})"
                break
        info = {
            "method": self.name,
            "params": dict(p),
            "seed": ctx.seed,
            "lam_used": lam,
            "stop_reason": stop_reason,
            "goal": goal.record() if goal else None,
            "modules_changed": len(expert.keys() & anti.keys()),
            "cost": {
                "expert": expert_cost,
                "anti_expert": anti_cost,
                "total_seconds": round(time.perf_counter() - start, 3),
            },
        }
        assert work is not None  # the first weight is always kept
        return finish(loaded, work, info)
