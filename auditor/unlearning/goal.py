"""Stop a method when its goal is met, not after a fixed step count.

A fixed number of steps lands on different sides of a threshold on different
machines and on models of other sizes: float round-off differs between CPUs,
and a 135M model ascends far faster than the embedded world's. So a method's
goal is measured: every ``check_every`` steps the model in training answers the
forget questions (greedy, the ``qa`` probe's correctness; a fixed sample of
``GOAL_CHECK_ITEMS`` of them when there are more), and the run stops once its
accuracy is at most ``forget_goal`` times the input model's. The step count is
then only a budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from auditor.data import sample_items
from auditor.lm.models import LoadedModel
from auditor.plugins import RunContext
from auditor.types import ItemSet
from auditor.unlearning.check import qa_accuracy

GOAL_CHECK_ITEMS = 200  # forget questions answered at each check (checks were most of a run's time with 480)
GOAL_DEFAULTS = {
    "forget_goal": 0.25,  # stop once forget accuracy <= this share of the input model's; 0: run the whole budget
    "check_every": 5,  # optimiser steps between two checks
}


@dataclass
class ForgetGoal:
    """The stop check of one run: forget accuracy at or under ``target``, measured every ``every`` steps."""

    loaded: LoadedModel  # the input model (its tokenizer and spec are reused for the model in training)
    forget: ItemSet
    ctx: RunContext
    start: float  # the input model's forget accuracy
    target: float
    every: int
    history: list[tuple[int, float]] = field(default_factory=list)  # (steps done, forget accuracy)

    def accuracy(self, model: torch.nn.Module) -> float:
        """Forget accuracy of ``model`` (a peft model is asked through its base, where the adapter sits)."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        probe = LoadedModel(inner, self.loaded.tokenizer, "in-training", self.loaded.spec)
        return qa_accuracy(probe, self.forget, self.ctx.prompts)

    def __call__(self, model: torch.nn.Module, done: int) -> str | None:
        if done % self.every:
            return None
        accuracy = self.accuracy(model)
        self.history.append((done, round(accuracy, 4)))
        if not self.start:  # nothing to measure progress by: a wrong prompt format looks like this
            return f"the input model answered no forget question; stopped after {done} steps (check the prompt format)"
        if accuracy <= self.target:
            return f"goal reached: forget accuracy {accuracy:.2f} <= {self.target:.2f} after {done} steps"
        return None

    def record(self) -> dict:
        """What the run's report says about the goal."""
        return {
            "forget_goal": round(self.target / self.start, 4) if self.start else None,
            "start_accuracy": round(self.start, 4),
            "target_accuracy": round(self.target, 4),
            "checks": self.history,
        }


def forget_goal(loaded: LoadedModel, forget: ItemSet, ctx: RunContext, params: dict) -> ForgetGoal | None:
    """The stop check ``params`` ask for, or None (goal off, or a forget set without QA items to check)."""
    fraction = params.get("forget_goal", 0)
    if not fraction or forget.kind != "qa":
        return None
    checked = sample_items(forget, GOAL_CHECK_ITEMS, ctx.seed)
    start = qa_accuracy(loaded, checked, ctx.prompts)
    return ForgetGoal(loaded, checked, ctx, start, fraction * start, params["check_every"])
