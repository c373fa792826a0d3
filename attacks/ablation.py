"""Direction ablation: remove, layer by layer, what separates forget prompts from retain prompts.

Lucki et al. (2024) found that unlearning methods often work like refusal: the
forget prompts are told apart by a direction of the residual stream, and
projecting that direction out (as Arditi et al. 2024 do for refusal) brings the
knowledge back, with no training. Per decoder block the direction is the
difference between the mean block output at the last token of the forget
questions and that of the retain questions, measured in the attacked model
itself; forward hooks remove it from each block's output at every position
(``auditor.lm.ablation``). Only the questions are read, never the answers, and
the reference gets the same treatment from its own activations.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from attacks.common import outcome, skipped, variant_label
from auditor.errors import UserError
from auditor.lm.ablation import ablate_mean_difference
from auditor.lm.adapters import shared_variant
from auditor.lm.hooks import decoder_parts
from auditor.lm.models import LoadedModel
from auditor.plugins import Attack, AttackedVariant, AttackOutcome, RunContext

LAYER_CHOICES = ("all", "early", "late")

PAPER = (
    "https://arxiv.org/abs/2409.18025"  # Lucki et al., An Adversarial Perspective on Machine Unlearning for AI Safety
)


class AblateDirections(Attack):
    """Project out, per layer, the mean difference of forget and retain question activations."""

    name = "direction-ablation"
    summary = "Project out, per layer, the mean activation difference of forget vs retain questions (no training)."
    paper = PAPER
    tier = "white-box-static"
    family = "ablation"
    reloadable = False  # the ablation is forward hooks: a saved model would not carry it
    defaults: ClassVar[dict[str, Any]] = {"layers": "all"}  # all, early (first half), late (second half), or A-B
    search_space = ("layers=late", "layers=early")

    def validate(self) -> None:
        layers = str(self.params["layers"])
        first, sep, last = layers.partition("-")
        if layers not in LAYER_CHOICES and not (sep and first.isdigit() and last.isdigit() and int(first) <= int(last)):
            raise UserError(f"{self.name}: layers must be all, early, late or A-B (block indices), got {layers!r}")

    def chosen_blocks(self, n_blocks: int) -> list[int]:
        """The indices of the blocks whose direction is removed."""
        layers = str(self.params["layers"])
        if layers == "all":
            return list(range(n_blocks))
        if layers in ("early", "late"):
            half = max(1, n_blocks // 2)
            return list(range(half)) if layers == "early" else list(range(n_blocks - half, n_blocks))
        first, _, last = layers.partition("-")
        return [i for i in range(int(first), int(last) + 1) if i < n_blocks]

    def apply(self, loaded: LoadedModel, ctx: RunContext) -> AttackOutcome:
        started = time.perf_counter()
        forget = [ctx.prompts.prompt(item.question) for item in ctx.data.forget.items if item.question]
        retain = [ctx.prompts.prompt(item.question) for item in ctx.data.retain.items if item.question]
        if not forget or not retain:
            return skipped(self, loaded, "the forget and retain sets both need questions", started)
        parts = decoder_parts(loaded.model)
        if parts is None:
            return skipped(self, loaded, "the model exposes no decoder blocks to ablate", started)
        blocks = self.chosen_blocks(len(parts[0]))
        if not blocks:
            return skipped(self, loaded, f"layers={self.params['layers']} names no block of this model", started)
        copy = shared_variant(loaded, variant_label(loaded, self))  # hooks on the copy's modules only
        difference = ablate_mean_difference(copy.model, copy.tokenizer, forget, retain, blocks)
        norms = [round(float(n), 4) for n in difference.norm(dim=-1)]
        applied = {
            "layers": len(norms),
            "blocks": blocks,
            "direction_norms": norms,  # per layer, before normalising: how far apart the two means lie
            "position": "last prompt token (measured); every position (ablated)",
            "prompts": {"forget": len(forget), "retain": len(retain)},
        }
        return outcome(self, loaded, [AttackedVariant(copy)], applied=applied, started=started)
