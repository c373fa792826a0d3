"""What every bundled method shares: examples from item sets, the fine-tune driver, the outcome record.

A fine-tuning method is a ``FineTuneMethod``: it names its training streams
(``streams``) and builds a loss over them (``build_loss``); ``unlearn`` clones
the input, runs the shared loop ``auditor.lm.training.train`` and records the
resolved settings and the cost. The input model is never changed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import torch

from auditor.errors import UserError
from auditor.lm.losses import bounded_nll
from auditor.lm.models import LoadedModel, clone, fingerprint_module
from auditor.lm.training import Batch, Example, LossFn, TrainConfig, TrainReport, train
from auditor.plugins import RunContext, UnlearningMethod, UnlearnOutcome
from auditor.types import ItemSet
from auditor.unlearning.goal import GOAL_DEFAULTS, MAX_BACKOFFS, ForgetGoal, forget_goal

# Settings of the shared loop that every fine-tuning method exposes as parameters.
TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 300,  # optimiser steps at most: a budget, the forget goal stops a run sooner
    "learning_rate": 1e-3,
    "batch_size": 16,  # examples per stream per step
    "lora": True,  # LoRA adapter merged at the end; false: full fine-tuning
    "lora_rank": 8,
    **GOAL_DEFAULTS,
}


def examples(items: ItemSet, ctx: RunContext, method: str, answers: list[str] | None = None) -> list[Example]:
    """Training examples of a QA set (prompt -> completion) or a text set (whole text).

    ``answers`` replaces the items' answers (refusals, random labels).
    """
    if items.kind == "qa":
        targets = answers if answers is not None else [item.answer or "" for item in items.items]
        return [
            Example(ctx.prompts.prompt(item.question or ""), ctx.prompts.completion(target))
            for item, target in zip(items.items, targets, strict=True)
        ]
    if items.kind == "text" and answers is None:
        return [Example("", item.text or "") for item in items.items]
    raise UserError(f"{method}: the {items.name} set holds {items.kind} items; this method needs question-answer items")


FORGET_STREAMS = ("forget", "forget_texts")


def forget_streams(forget: ItemSet, ctx: RunContext, method: str) -> dict[str, list[Example]]:
    """What a method unlearns: the forget answers, and the forget texts as a stream of their own when the data
    has them (in one stream the longer texts would outweigh the few answer tokens in the mean loss)."""
    texts = ctx.data.forget_texts
    return {"forget": examples(forget, ctx, method)} | ({"forget_texts": examples(texts, ctx, method)} if texts else {})


def forget_batches(batches: Mapping[str, Batch]) -> list[Batch]:
    """One step's batch of every forget stream."""
    return [batches[name] for name in FORGET_STREAMS if name in batches]


def finish(loaded: LoadedModel, model: torch.nn.Module, info: dict[str, Any]) -> UnlearnOutcome:
    """Wrap ``model`` as the unlearned ``LoadedModel`` (fingerprinted by its weights) with ``info``."""
    model.eval()
    out = LoadedModel(model, loaded.tokenizer, fingerprint_module(model), loaded.spec)
    info = {"input_fingerprint": loaded.fingerprint, "output_fingerprint": out.fingerprint, **info}
    return UnlearnOutcome(model=out, info=info)


class FineTuneMethod(UnlearningMethod):
    """A method that is a loss over named streams, driven by ``auditor.lm.training.train``."""

    defaults: ClassVar[dict[str, Any]] = dict(TRAIN_DEFAULTS)

    def validate(self) -> None:
        p = self.params
        if p["steps"] < 1 or p["batch_size"] < 1 or p["learning_rate"] <= 0 or p["lora_rank"] < 1:
            raise UserError(f"{self.name}: steps, batch_size, lora_rank and learning_rate must be positive")
        if (
            not 0 <= p.get("forget_goal", 0) < 1
            or p.get("check_every", 1) < 1
            or not 0 <= p.get("retain_floor", 0) <= 1
        ):
            raise UserError(f"{self.name}: forget_goal must be in [0, 1), retain_floor in [0, 1], check_every positive")

    def streams(self, loaded: LoadedModel, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> dict[str, list]:
        """The named example streams; by default the forget answers and texts, and the retain answers."""
        return forget_streams(forget, ctx, self.name) | {"retain": examples(retain, ctx, self.name)}

    def build_loss(self, loaded: LoadedModel, ctx: RunContext) -> LossFn:
        """The loss over one batch per stream; ``loaded`` is the untouched original."""
        raise NotImplementedError

    def train_hooks(self, model: torch.nn.Module) -> dict[str, Any]:
        """Extra arguments of ``train`` for the copy being trained (``after_step``, ``trainable``)."""
        return {}

    def train_config(self, ctx: RunContext) -> TrainConfig:
        p = self.params
        return TrainConfig(
            steps=p["steps"],
            learning_rate=p["learning_rate"],
            batch_size=p["batch_size"],
            lora=p.get("lora", True),
            lora_rank=p["lora_rank"],
            lora_alpha=2 * p["lora_rank"],
            lora_targets="all-linear",  # every Linear but the output head, whatever the architecture
            seed=ctx.seed,
            check_every=p.get("check_every", 1),
        )

    def run_training(
        self, loaded: LoadedModel, forget: ItemSet, retain: ItemSet, ctx: RunContext, goal: ForgetGoal | None = None
    ) -> TrainReport:
        """Clone the original and fine-tune the copy with this method's streams and loss, until ``goal``."""
        work = clone(loaded).model
        streams = self.streams(loaded, forget, retain, ctx)
        guarded = goal is not None and goal.retain is not None  # a retain floor to back off from
        return train(
            work,
            loaded.tokenizer,
            streams,
            replace(self.train_config(ctx), max_backoffs=MAX_BACKOFFS if guarded else 0),
            loss_fn=self.build_loss(loaded, ctx),
            progress=ctx.progress,
            stop=goal,
            **self.train_hooks(work),
        )

    def unlearn(self, loaded: LoadedModel, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> UnlearnOutcome:
        start = time.perf_counter()
        goal = forget_goal(loaded, forget, ctx, self.params, retain)
        report = self.run_training(loaded, forget, retain, ctx, goal)
        info = {
            "method": self.name,
            "params": dict(self.params),
            "seed": ctx.seed,
            "forget_items": len(forget),
            "retain_items": len(retain),
            "steps": report.steps,
            "backoffs": report.backoffs,
            "stop_reason": report.stop_reason,
            "goal": goal.record() if goal else None,
            "cost": {**report.cost, "total_seconds": round(time.perf_counter() - start, 3)},
            "final_loss": report.losses[-1] if report.losses else None,
        }
        return finish(loaded, report.model, info)


def ga_term(model: torch.nn.Module, forget: Sequence[Batch]) -> torch.Tensor:
    """Gradient ascent on the forget batches: the negated mean NLL of each, summed, each token's NLL bounded.

    A token's NLL counts up to ``ln(vocabulary size)``, the NLL of a uniform guess: an answer token
    already less likely than chance gives no more gradient. Unbounded, the ascent runs to ever larger
    losses (-178 nats on a 135M model within 40 steps) and takes every other answer with it.
    """
    return -sum(bounded_nll(model, batch) for batch in forget)


def kl_to_reference(model: torch.nn.Module, reference: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean KL(reference || model) of the next-token distributions at the labelled positions.

    The reference (the original) is only read under ``no_grad``; methods pass the
    input model itself, which is never stepped, instead of a second copy.
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    with torch.no_grad():
        ref = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    mask = batch.labels[:, 1:] != -100
    logp = torch.log_softmax(logits[mask], dim=-1)
    ref_logp = torch.log_softmax(ref[mask], dim=-1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()
