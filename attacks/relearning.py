"""Relearning attacks: a short fine-tune brings back knowledge that unlearning only suppressed.

Every attack fine-tunes through ``auditor.lm.training.train`` with a fixed seed
from the run context: a LoRA adapter on a shared copy of the input's weights
(``auditor.lm.adapters``; no weight copy), or a whole copy in ``mode=full``. It is
applied with the same budget to the unlearned model and to the reference, so
what the fine-tune teaches by itself cancels out in the residual.

Defaults were tuned on the embedded world (a 2-layer, 128-wide Llama with a
1k vocabulary): 40 LoRA steps of 16 examples at learning rate 1e-3, rank 8 on
every Linear of the blocks. With these, ``relearn-forget`` (2 folds) moved the
reference's forget QA accuracy from 0.075 to 0.058 and brought a refusal
("I don't know") control from 0.00 back to 0.93 (the original: 1.00); 20 or 60
steps, or learning rate 3e-4 or 3e-3, gave 0.83-0.93 on the control as well.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

from attacks.common import (
    empty_fold_reason,
    fold_training_sets,
    item_examples,
    outcome,
    skipped,
    subject_folds,
    variant_label,
)
from auditor.errors import UserError
from auditor.lm.adapters import serving_model, shared_variant
from auditor.lm.memory import LARGE_MODEL, room_for
from auditor.lm.models import LoadedModel, clone
from auditor.lm.training import Example, TrainConfig, train
from auditor.plugins import Attack, AttackedVariant, AttackOutcome, RunContext
from auditor.types import AuditData, Item

PAPER_DEEB = "https://arxiv.org/abs/2410.08827"
# What one training step keeps for its backward pass, per token: each decoder layer about this many floats per
# hidden unit, and the output head's logits about this many times (logits, log-softmax, gradient). On
# SmolLM2-135M (30 layers of 576, 49,152 tokens) a batch of 16 capital questions comes to 1.2 GB; recomputing
# activations saved 1 GB there, and made the embedded world's (656k-parameter) fine-tunes 1.5x slower.
ACTIVATION_FLOATS = 16
LOGIT_COPIES = 3
PAPER_LUCKI = "https://arxiv.org/abs/2409.18025"

BUDGET: dict[str, Any] = {
    "epochs": 3.0,  # passes over the training examples ...
    "steps": 40,  # ... in at most this many optimiser steps per fine-tune ...
    "min_steps": 5,  # ... and at least this many
    "learning_rate": 1e-3,
    "batch_size": 16,  # examples per step
    "mode": "lora",  # "lora" (an adapter on the shared input weights) or "full" (a whole copy)
    "lora_rank": 8,
    "lora_alpha": 16,
    "lora_targets": "all-linear",  # peft's "all-linear", or module names joined by "|" (e.g. "q_proj|v_proj")
    "checkpointing": "auto",  # recompute activations in the backward pass: true, false, or auto (when memory is short)
}


def activation_bytes(loaded: LoadedModel, examples: Sequence[Example], batch_size: int) -> int | None:
    """About what one training step on ``examples`` keeps for its backward pass without recomputing: every layer's
    activations and the output head's logits for a batch of the longest example. None when the model's config
    does not say its layers, width and vocabulary."""
    config = loaded.model.config
    shape = [getattr(config, name, None) for name in ("num_hidden_layers", "hidden_size", "vocab_size")]
    if not examples or not all(isinstance(n, int) for n in shape):
        return None
    layers, width, vocabulary = shape
    longest = max(len(loaded.tokenizer(e.prompt + e.completion)["input_ids"]) for e in examples)
    weight = next(loaded.model.parameters())
    per_token = layers * width * ACTIVATION_FLOATS + vocabulary * LOGIT_COPIES
    return min(batch_size, len(examples)) * longest * per_token * weight.element_size()


def checkpoints_by_default(loaded: LoadedModel, examples: Sequence[Example], batch_size: int) -> bool:
    """Whether a fine-tune of ``loaded`` recomputes activations by default: when memory has no room for them
    (``lm.memory.room_for``), or, where they cannot be estimated, from ``LARGE_MODEL`` parameters on."""
    needed = activation_bytes(loaded, examples, batch_size)
    if needed is None:
        return sum(p.numel() for p in loaded.model.parameters()) >= LARGE_MODEL
    return not room_for(needed, str(next(loaded.model.parameters()).device))


def subjects(items: Sequence[Item]) -> frozenset[str]:
    """The explicit subjects (``Item.group``) of ``items``; items without one share no identity across sets."""
    return frozenset(item.group for item in items if item.group is not None)


class Relearn(Attack):
    """Shared budget, validation and fine-tune of the relearning attacks.

    The budget is in passes over the training examples, within a floor and a ceiling of steps: 40 steps of 16
    examples were 37 passes over a 17-subject fold of capitals, and taught a real 135M model its training fold's
    cities in place of the held-out ones. The adaptive search tries lower learning rates (SmolLM2-135M-Instruct
    kept only 0.81 of its held-out capitals at 1e-4 for 5 steps), fewer passes, then stronger fine-tunes: a higher
    rate, a full fine-tune, more passes. Cost: examples seen (a full fine-tune counts twice: it steps every weight)."""

    tier = "white-box-compute"
    family = "relearning"
    stochastic = True
    defaults: ClassVar[dict[str, Any]] = dict(BUDGET)
    search_space = (
        "epochs=1,learning_rate=0.0003",
        "learning_rate=0.0001",
        "learning_rate=0.00003",
        "learning_rate=0.003",
        "learning_rate=0.0001,mode=full",
        "epochs=9,steps=120",
    )

    def _runs(self) -> int:
        """Fine-tunes one application runs."""
        return 1

    def validate(self) -> None:
        p = self.params
        if p["mode"] not in ("lora", "full"):
            raise UserError(f"{self.name}: mode must be lora or full, got {p['mode']!r}")
        if p["epochs"] <= 0 or p["min_steps"] < 1:
            raise UserError(f"{self.name}: epochs and min_steps must be positive")
        if p["steps"] < 1 or p["batch_size"] < 1 or p["learning_rate"] <= 0:
            raise UserError(f"{self.name}: steps, batch_size and learning_rate must be positive")
        if str(p["checkpointing"]).lower() not in ("auto", "true", "false"):
            raise UserError(f"{self.name}: checkpointing must be auto, true or false, got {p['checkpointing']!r}")
        if p["mode"] == "lora" and (p["lora_rank"] < 1 or not self._targets()):
            raise UserError(f"{self.name}: lora_rank must be positive and lora_targets non-empty")

    def _targets(self) -> str | tuple[str, ...]:
        raw = self.params["lora_targets"]
        if raw == "all-linear":
            return raw
        return tuple(part.strip() for part in raw.replace(",", "|").split("|") if part.strip())

    def training_steps(self, examples: int) -> int:
        """Optimiser steps of one fine-tune on ``examples``: ``epochs`` passes over them, at least ``min_steps`` and at
        most ``steps`` (40 steps of 16 were 37 passes over a 17-subject fold and 2.7 over the world's 60 subjects)."""
        p = self.params
        return min(p["steps"], max(p["min_steps"], math.ceil(p["epochs"] * examples / p["batch_size"])))

    def training_examples(self, data: AuditData) -> int:
        """Examples one fine-tune of this attack trains on."""
        raise NotImplementedError

    def cost(self, data: AuditData | None = None) -> float:
        """Examples seen over the attack's fine-tunes (a full fine-tune counts twice: it steps every weight); without
        data, as many steps as allowed."""
        p = self.params
        steps = self.training_steps(self.training_examples(data)) if data is not None else p["steps"]
        return steps * p["batch_size"] * (2.0 if p["mode"] == "full" else 1.0) * self._runs()

    def config(self, seed: int, examples: int) -> TrainConfig:
        p = self.params
        return TrainConfig(
            steps=self.training_steps(examples),
            learning_rate=p["learning_rate"],
            batch_size=p["batch_size"],
            lora=p["mode"] == "lora",
            lora_rank=p["lora_rank"],
            lora_alpha=p["lora_alpha"],
            lora_targets=self._targets(),
            seed=seed,
        )

    def finetune(
        self, loaded: LoadedModel, examples: list[Example], ctx: RunContext, name: str, groups: frozenset[str]
    ) -> tuple[AttackedVariant, dict[str, Any]]:
        """The fine-tuned variant of ``loaded`` (in eval mode) and the run's cost.

        In ``lora`` mode the variant is an adapter on a shared copy of ``loaded``'s weights
        (``auditor.lm.adapters``); in ``full`` mode, a deep copy: one more model in memory.
        """
        label, lora = variant_label(loaded, self, name), self.params["mode"] == "lora"
        copy = shared_variant(loaded, label) if lora else clone(loaded, label)
        config = replace(
            self.config(ctx.seed, len(examples)),
            merge_lora=False,
            checkpointing=self._checkpointing(loaded, examples),
        )
        report = train(copy.model, copy.tokenizer, {"train": examples}, config, progress=ctx.progress)
        trained = report.model.eval()
        copy.model = serving_model(trained) if lora else trained
        variant = AttackedVariant(copy, name, groups, adapter=trained if lora else None)
        return variant, {"steps": report.steps, "examples": report.examples_seen["train"]}

    def _checkpointing(self, loaded: LoadedModel, examples: Sequence[Example]) -> bool:
        choice = str(self.params["checkpointing"]).lower()
        if choice == "auto":
            return checkpoints_by_default(loaded, examples, self.params["batch_size"])
        return choice == "true"

    def single(self, loaded: LoadedModel, ctx: RunContext, items: Sequence[Item], what: str) -> AttackOutcome:
        """Fine-tune once on ``items`` (the retain and unrelated variants)."""
        started = time.perf_counter()
        examples = item_examples(items, ctx.prompts)
        if not examples:
            return skipped(self, loaded, f"no usable {what} items to fine-tune on", started)
        seen = subjects(items)
        variant, cost = self.finetune(loaded, examples, ctx, "main", seen)
        applied = {"data": what, "trained_items": len(examples), "trained_groups": len(seen), **self._settings()}
        return outcome(self, loaded, [variant], applied=applied, started=started, cost=cost)

    def _settings(self) -> dict[str, Any]:
        p = self.params
        lora = {"lora_rank": p["lora_rank"], "lora_alpha": p["lora_alpha"], "lora_targets": self._targets()}
        budget = {"epochs": p["epochs"], "min_steps": p["min_steps"], "max_steps": p["steps"]}
        return {"mode": p["mode"], **budget, **(lora if p["mode"] == "lora" else {})}


class RelearnForget(Relearn):
    """Deeb & Roger's retraining-on-T: fine-tune on some forget subjects, evaluate on the held-out rest."""

    name = "relearn-forget"
    summary = "Fine-tune on k-1 folds of the forget subjects, evaluate each fold on the model that never saw it."
    paper = PAPER_DEEB
    defaults: ClassVar[dict[str, Any]] = {**BUDGET, "folds": 2}

    def validate(self) -> None:
        super().validate()
        if self.params["folds"] < 2:
            raise UserError(f"{self.name}: folds must be at least 2, got {self.params['folds']}")

    def _runs(self) -> int:
        return self.params["folds"]

    def training_examples(self, data: AuditData) -> int:
        """The items of every fold but one."""
        folds = self.params["folds"]
        return len(data.forget) * (folds - 1) // folds

    def apply(self, loaded: LoadedModel, ctx: RunContext) -> AttackOutcome:
        started = time.perf_counter()
        items = ctx.data.forget.items
        folds = subject_folds(items, self.params["folds"], ctx.seed)
        if reason := empty_fold_reason(items, folds):
            return skipped(self, loaded, reason, started)
        variants, records, cost = [], [], {"steps": 0, "examples": 0}
        for name, held_out, trained, examples in fold_training_sets(items, folds, ctx.prompts):
            if not examples:
                return skipped(self, loaded, "the forget items have no question/answer or text to train on", started)
            variant, run_cost = self.finetune(loaded, examples, ctx, name, frozenset(item.key for item in trained))
            variants.append(variant)
            records.append(
                {"variant": name, "held_out_groups": held_out, "trained_items": sorted(item.id for item in trained)}
            )
            cost["steps"] += run_cost["steps"]
            cost["examples"] += run_cost["examples"]
        applied = {"data": "forget", "folds": records, **self._settings()}
        return outcome(self, loaded, variants, applied=applied, started=started, cost=cost)


class RelearnRetain(Relearn):
    """Fine-tune on in-distribution retain data: what related but not forgotten facts bring back."""

    name = "relearn-retain"
    summary = "Fine-tune on the retain set's QA (in-distribution data the model was allowed to keep)."
    paper = PAPER_DEEB

    def training_examples(self, data: AuditData) -> int:
        return len(data.retain)

    def apply(self, loaded: LoadedModel, ctx: RunContext) -> AttackOutcome:
        return self.single(loaded, ctx, ctx.data.retain.items, "retain")


class RelearnUnrelated(Relearn):
    """Benign fine-tuning on text unrelated to the forget set (Lucki et al. 2024)."""

    name = "relearn-unrelated"
    summary = "Fine-tune on text unrelated to the forget set (benign fine-tuning)."
    paper = PAPER_LUCKI

    def training_examples(self, data: AuditData) -> int:
        return len(data.unrelated) if data.unrelated is not None else 0

    def apply(self, loaded: LoadedModel, ctx: RunContext) -> AttackOutcome:
        if ctx.data.unrelated is None:
            return skipped(self, loaded, "no unrelated data given (AuditData.unrelated)", time.perf_counter())
        return self.single(loaded, ctx, ctx.data.unrelated.items, "unrelated")
