"""Fine-tuning the forget questions towards wrong answers: random labels and adversarial tokens.

- ``random-labels``: each forget question is trained towards another item's
  answer of the same relation (when the items carry one; else any other answer),
  drawn once with the run's seed, plus retain NLL.
- ``adversarial`` (Yao et al., ACL 2024): at each answer position the target is
  the original's most likely next token other than the true one, found by
  teacher-forcing the original on the true answer; the closing EOS keeps its
  label, so the model still stops. Plus retain NLL.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from auditor.errors import UserError
from auditor.lm.losses import nll_loss
from auditor.lm.models import LoadedModel
from auditor.lm.training import Batch, LossFn
from auditor.plugins import RunContext
from auditor.stats.metrics import normalize
from auditor.types import ItemSet
from auditor.unlearning.base import TRAIN_DEFAULTS, FineTuneMethod, examples


def draw_random_answers(forget: ItemSet, retain: ItemSet, rng: random.Random) -> list[str]:
    """For each forget item, another item's answer: of the same relation when possible, never its own."""
    pool = [(item.relation, item.answer) for item in (*forget.items, *retain.items) if item.answer is not None]
    by_relation: dict[str | None, list[str]] = {}
    for relation, answer in pool:
        by_relation.setdefault(relation, []).append(answer)
    everything = [answer for _, answer in pool]
    drawn = []
    for item in forget.items:
        own = normalize(item.answer or "")
        same = by_relation.get(item.relation, []) if item.relation is not None else []
        candidates = [a for a in same if normalize(a) != own] or [a for a in everything if normalize(a) != own]
        if not candidates:
            raise UserError("random-labels: every item has the same answer; there is no other answer to draw")
        drawn.append(rng.choice(candidates))
    return drawn


def adversarial_targets(ref_logits: torch.Tensor, targets: torch.Tensor, keep_token: int | None) -> torch.Tensor:
    """Replace each labelled next token by the reference's most likely other token.

    ``ref_logits`` ``[B, T, V]`` predict ``targets`` ``[B, T]`` (-100 where unlabelled);
    labels equal to ``keep_token`` (EOS) are kept.
    """
    masked = ref_logits.float().scatter(-1, targets.clamp(min=0).unsqueeze(-1), float("-inf"))
    relabelled = masked.argmax(dim=-1)
    keep = (targets == -100) | (
        targets == keep_token if keep_token is not None else torch.zeros_like(targets, dtype=torch.bool)
    )
    return torch.where(keep, targets, relabelled)


def adversarial_loss(
    model: torch.nn.Module, reference: torch.nn.Module, forget: Batch, eos: int | None
) -> torch.Tensor:
    """Cross-entropy of the model towards the adversarial targets of one forget batch."""
    targets = forget.labels[:, 1:]
    with torch.no_grad():
        ref_logits = reference(input_ids=forget.input_ids, attention_mask=forget.attention_mask).logits[:, :-1]
        wrong = adversarial_targets(ref_logits, targets, eos)
    logits = model(input_ids=forget.input_ids, attention_mask=forget.attention_mask).logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), wrong.reshape(-1))


class RandomLabels(FineTuneMethod):
    """Forget questions trained towards random answers of the same type, plus retain NLL."""

    name = "random-labels"
    summary = "Fine-tune the forget questions towards random answers of the same relation."
    paper = "Yao et al., ACL 2024, Large Language Model Unlearning (random mismatch)"
    defaults: ClassVar[dict[str, Any]] = {**TRAIN_DEFAULTS, "learning_rate": 1e-3, "retain_weight": 1.0}

    def streams(self, loaded, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> dict[str, list]:
        wrong = draw_random_answers(forget, retain, random.Random(ctx.seed))
        return {"forget": examples(forget, ctx, self.name, wrong), "retain": examples(retain, ctx, self.name)}

    def build_loss(self, loaded: LoadedModel, ctx: RunContext) -> LossFn:
        weight = self.params["retain_weight"]
        return lambda model, b: nll_loss(model, b["forget"]) + weight * nll_loss(model, b["retain"])


class Adversarial(FineTuneMethod):
    """Forget answers trained, token by token, towards the original's best wrong next token, plus retain NLL."""

    name = "adversarial"
    summary = "Fine-tune the forget answers towards the original's most likely wrong tokens."
    paper = "Yao et al., ACL 2024, Large Language Model Unlearning"
    defaults: ClassVar[dict[str, Any]] = {**TRAIN_DEFAULTS, "learning_rate": 1e-3, "retain_weight": 1.0}

    def build_loss(self, loaded: LoadedModel, ctx: RunContext) -> LossFn:
        weight, reference, eos = self.params["retain_weight"], loaded.model, loaded.tokenizer.eos_token_id
        return lambda model, b: (
            adversarial_loss(model, reference, b["forget"], eos) + weight * nll_loss(model, b["retain"])
        )
