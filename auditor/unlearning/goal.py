"""Stop a method when its goal is met, not after a fixed step count.

A fixed number of steps lands on different sides of a threshold on different
machines and on models of other sizes: float round-off differs between CPUs,
and a 135M model ascends far faster than the embedded world's. So a method's
goal is measured: every ``check_every`` steps the model in training answers the
forget questions (greedy, the ``qa`` probe's correctness; a fixed sample of
``GOAL_CHECK_ITEMS`` of them when there are more), and the run stops once its
accuracy is at most ``forget_goal`` times the input model's. The step count is
then only a budget.

With ``retain_floor`` set, each check also answers a sample of the retain
questions. Under ``retain_floor`` times the input model's retain accuracy, the
check asks the training loop to back off (``auditor.lm.training.BackOff``): undo
the steps since the last passing check and halve the learning rate. A step size
that suits the embedded world wrecks a 135M model within a few steps; backing off
finds a smaller one, or stops at the last state that kept the floor. It is off by
default: GradDiff on the embedded world dips under 0.7 of its retain accuracy on
the way to its goal and recovers, so a floor there slows it past its budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from auditor.data import sample_items
from auditor.lm.knowledge import qa_accuracy
from auditor.lm.models import LoadedModel
from auditor.lm.rollback import BackOff
from auditor.plugins import RunContext
from auditor.types import ItemSet

GOAL_CHECK_ITEMS = 200  # forget questions answered at each check (checks were most of a run's time with 480)
RETAIN_CHECK_ITEMS = 64  # retain questions answered at each check, for the retain floor
GOAL_DEFAULTS = {
    "forget_goal": 0.25,  # stop once forget accuracy <= this share of the input model's; 0: run the whole budget
    "check_every": 5,  # optimiser steps between two checks
    "retain_floor": 0.0,  # back off when retain accuracy falls under this share of the input model's; 0: never
}
MAX_BACKOFFS = 6  # learning-rate halvings at most (1/64 of the method's rate)


@dataclass
class ForgetGoal:
    """The stop check of one run: forget accuracy at or under ``target`` (the training loop asks it every
    ``check_every`` steps; ext-sub at each weight it tries)."""

    loaded: LoadedModel  # the input model (its tokenizer and spec are reused for the model in training)
    forget: ItemSet
    ctx: RunContext
    start: float  # the input model's forget accuracy
    target: float
    retain: ItemSet | None = None  # the retain sample each check answers too
    retain_floor: float = 0.0  # the retain accuracy under which a check backs off
    history: list[tuple] = field(default_factory=list)  # (steps done, forget accuracy[, retain accuracy])

    def accuracy(self, model: torch.nn.Module, items: ItemSet | None = None) -> float:
        """Forget (or ``items``) accuracy of ``model`` (a peft model is asked through its base, where the adapter
        sits)."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        probe = LoadedModel(inner, self.loaded.tokenizer, "in-training", self.loaded.spec)
        return qa_accuracy(probe, self.forget if items is None else items, self.ctx.prompts)

    def __call__(self, model: torch.nn.Module, done: int) -> str | None:
        accuracy = self.accuracy(model)
        kept = self.accuracy(model, self.retain) if self.retain is not None else None
        self.history.append((done, round(accuracy, 4)) + (() if kept is None else (round(kept, 4),)))
        if not self.start:  # nothing to measure progress by: a wrong prompt format looks like this
            return f"the input model answered no forget question; stopped after {done} steps (check the prompt format)"
        if kept is not None and kept < self.retain_floor:
            return BackOff(f"retain accuracy {kept:.2f} < {self.retain_floor:.2f} after {done} steps")
        if accuracy <= self.target:
            return f"goal reached: forget accuracy {accuracy:.2f} <= {self.target:.2f} after {done} steps"
        return None

    def record(self) -> dict:
        """What the run's report says about the goal."""
        return {
            "forget_goal": round(self.target / self.start, 4) if self.start else None,
            "start_accuracy": round(self.start, 4),
            "target_accuracy": round(self.target, 4),
            "retain_floor_accuracy": round(self.retain_floor, 4) if self.retain is not None else None,
            "checks": self.history,
        }


def forget_goal(
    loaded: LoadedModel, forget: ItemSet, ctx: RunContext, params: dict, retain: ItemSet | None = None
) -> ForgetGoal | None:
    """The stop check ``params`` ask for, or None (goal off, or a forget set without QA items to check); with a
    QA ``retain`` set and a ``retain_floor``, each check also guards the retain accuracy."""
    fraction = params.get("forget_goal", 0)
    if not fraction or forget.kind != "qa":
        return None
    checked = sample_items(forget, GOAL_CHECK_ITEMS, ctx.seed)
    start = qa_accuracy(loaded, checked, ctx.prompts)
    goal = ForgetGoal(loaded, checked, ctx, start, fraction * start)
    if retain is not None and retain.kind == "qa" and params.get("retain_floor", 0):
        goal.retain = sample_items(retain, RETAIN_CHECK_ITEMS, ctx.seed)
        goal.retain_floor = params["retain_floor"] * qa_accuracy(loaded, goal.retain, ctx.prompts)
    return goal
