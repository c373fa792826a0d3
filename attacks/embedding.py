"""Embedding-space attack: a few trained input embeddings before each question bring hidden answers back.

Schwinn et al. (2024) showed that adversarial embeddings, which no token
spells, recover knowledge that unlearning hid, and Che et al. (2025) that such
tampering predicts what other attacks will find. Here ``tokens`` soft
embeddings (``auditor.lm.soft_prompt``) open the question inside its turn.
They are optimised, with every weight of the model frozen, to make it give the
right answers of some forget subjects, and scored only on the held-out fold,
as ``relearn-forget`` is: the prompt cannot simply store the answers it is
scored on. The reference gets the same search from its own gradients.

Defaults, on the embedded world (forget QA accuracy, 2 folds, seed 0): 8
embeddings, 100 Adam steps of 8 examples at learning rate 0.1 moved a refusal
control (``idk``) from 0.013 to 0.76 and the ``ga`` method from 0.08 to 0.56,
while the reference went from 0.029 to 0.023 (50 steps of 16: 0.75 / 0.43). The
same prompt after the question reached 0.16 on ``idk`` in 200 steps (every
question token must be able to attend to it).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, ClassVar

from attacks.common import empty_fold_reason, fold_training_sets, outcome, skipped, subject_folds, variant_label
from attacks.relearning import checkpoints_by_default
from auditor.errors import UserError
from auditor.lm.models import LoadedModel
from auditor.lm.prompts import PromptEdit
from auditor.lm.soft_prompt import soft_prompt_variant, soft_table
from auditor.lm.training import Example, TrainConfig, train
from auditor.plugins import Attack, AttackedVariant, AttackOutcome, RunContext
from auditor.types import AuditData

PAPER = "https://arxiv.org/abs/2402.09063"  # Schwinn et al., Soft Prompt Threats (tampering: arXiv 2502.05209)


class EmbeddingAttack(Attack):
    """Optimise a soft prompt on k-1 folds of the forget subjects; score each fold with the prompt that never saw it."""

    name = "embedding-attack"
    summary = "Optimise a few input embeddings before the question on k-1 forget folds; score the held-out fold."
    paper = PAPER
    tier = "white-box-compute"
    family = "soft-prompt"
    stochastic = True
    reloadable = False  # the soft prompt lives in a wrapped embedding and an extended tokenizer
    # Fewer tokens store fewer training answers (a real model's 13 training subjects were memorised by 8 tokens).
    search_space = ("tokens=2,steps=50", "tokens=4", "tokens=2,learning_rate=0.03,steps=200", "steps=300")
    defaults: ClassVar[dict[str, Any]] = {
        "tokens": 8,  # soft embeddings before the question
        "steps": 100,
        "learning_rate": 0.1,
        "batch_size": 8,  # 16 gave the same on the world (idk 0.78, ga 0.62) at twice the cost
        "folds": 2,
    }

    def cost(self, data: AuditData | None = None) -> float:
        p = self.params
        return p["steps"] * p["batch_size"] * p["folds"]

    def validate(self) -> None:
        p = self.params
        if p["tokens"] < 1 or p["steps"] < 1 or p["batch_size"] < 1 or p["learning_rate"] <= 0:
            raise UserError(f"{self.name}: tokens, steps, batch_size and learning_rate must be positive")
        if p["folds"] < 2:
            raise UserError(f"{self.name}: folds must be at least 2, got {p['folds']}")

    def apply(self, loaded: LoadedModel, ctx: RunContext) -> AttackOutcome:
        started = time.perf_counter()
        items = [item for item in ctx.data.forget.items if item.question]
        if not items:
            return skipped(self, loaded, "the forget items have no questions to put a soft prompt before", started)
        folds = subject_folds(items, self.params["folds"], ctx.seed)
        if reason := empty_fold_reason(items, folds):
            return skipped(self, loaded, reason, started)
        variants, records, losses = [], [], []
        for name, held_out, trained, examples in fold_training_sets(items, folds, ctx.prompts):
            if not examples:
                return skipped(self, loaded, "the forget questions have no answers to optimise a prompt for", started)
            variant, loss = self._optimised(loaded, ctx, examples, name)
            variants.append(AttackedVariant(variant, name, frozenset(item.key for item in trained)))
            records.append({"variant": name, "held_out_groups": held_out, "trained_items": len(trained)})
            losses.append(loss)
        p = self.params
        applied = {"tokens": p["tokens"], "steps": p["steps"], "position": "before the question", "folds": records}
        cost = {"steps": p["steps"] * len(folds), "loss": losses}
        return outcome(self, loaded, variants, applied=applied, started=started, cost=cost)

    def _optimised(
        self, loaded: LoadedModel, ctx: RunContext, examples: list[Example], name: str
    ) -> tuple[LoadedModel, dict[str, float]]:
        """A variant whose soft prompt was trained on ``examples``, and its first and last training loss."""
        p = self.params
        variant, soft_text = soft_prompt_variant(loaded, p["tokens"], ctx.seed, variant_label(loaded, self, name))
        edit = PromptEdit(ctx.prompts, before=soft_text + " ")  # the space: the question's first word as after a space
        table = soft_table(variant.model)
        config = TrainConfig(
            steps=p["steps"],
            learning_rate=p["learning_rate"],
            batch_size=p["batch_size"],
            lora=False,
            seed=ctx.seed,
            checkpointing=checkpoints_by_default(loaded, examples, p["batch_size"]),
        )
        edited = [replace(ex, prompt=edit(ex.prompt)) for ex in examples]
        report = train(
            variant.model,
            variant.tokenizer,
            {"train": edited},
            config,
            trainable=lambda _name, param: param is table,
            progress=ctx.progress,
        )
        variant.model = report.model.eval()
        variant.prompt_edit = edit
        return variant, {"first": round(report.losses[0], 4), "last": round(report.losses[-1], 4)}
