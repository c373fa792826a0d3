"""Known-answer controls: a copy of the original, a refusal adapter, and an exact retrain.

- ``noop`` removes nothing: an audit must call it NOT_UNLEARNED.
- ``idk`` hides the forget answers behind "I don't know" with a merged LoRA
  adapter while keeping the retain answers: the knowledge is still in the
  weights, so an audit must call it HIDDEN.
- ``retrain`` is an exact retrain of the embedded world without the forget
  persons, with another seed than the world's reference: an audit must call it
  REMOVED.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from auditor.errors import UserError
from auditor.lm.losses import nll_loss
from auditor.lm.models import LoadedModel, ModelSpec, clone, fingerprint_dir, load_model
from auditor.lm.training import LossFn
from auditor.plugins import RunContext, UnlearningMethod, UnlearnOutcome
from auditor.types import ItemSet
from auditor.unlearning.base import TRAIN_DEFAULTS, FineTuneMethod, examples, finish


class NoOp(UnlearningMethod):
    """A copy of the original: nothing is unlearned."""

    name = "noop"
    summary = "Control: an unchanged copy of the original (must audit as NOT_UNLEARNED)."
    defaults: ClassVar[dict[str, Any]] = {}

    def unlearn(self, loaded: LoadedModel, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> UnlearnOutcome:
        return finish(loaded, clone(loaded).model, {"method": self.name, "params": {}})


class Refusal(FineTuneMethod):
    """A merged LoRA adapter that answers forget questions with a refusal and keeps retain answers.

    Loss: NLL(forget question -> refusal) + retain_weight * NLL(retain question -> answer).
    Defaults tuned on the embedded world (forget 1.00 -> 0.00 with 99% exact refusals, retain 1.00 -> 1.00):
    the world's tokenizer splits "know" into rarely seen characters, so fewer steps refuse only partly.
    """

    name = "idk"
    summary = "Control: a refusal ('I don't know') adapter that hides the forget answers (must audit as HIDDEN)."
    defaults: ClassVar[dict[str, Any]] = {
        **TRAIN_DEFAULTS,
        "steps": 250,
        "learning_rate": 2e-3,
        "forget_goal": 0.0,  # a control: a fixed recipe, so it refuses every forget question
        "refusal": "I don't know",
        "retain_weight": 1.0,
    }

    def streams(self, loaded, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> dict[str, list]:
        refusals = [self.params["refusal"]] * len(forget)
        return {"forget": examples(forget, ctx, self.name, refusals), "retain": examples(retain, ctx, self.name)}

    def build_loss(self, loaded: LoadedModel, ctx: RunContext) -> LossFn:
        weight = self.params["retain_weight"]
        return lambda model, b: nll_loss(model, b["forget"]) + weight * nll_loss(model, b["retain"])


class ExactRetrain(UnlearningMethod):
    """The embedded world's recipe retrained without the forget persons, under another seed.

    Applies only to the embedded world's original model (checked by fingerprint);
    the retrain is cached by the world.
    """

    name = "retrain"
    summary = "Control: exact retrain of the embedded world without the forget set (must audit as REMOVED)."
    defaults: ClassVar[dict[str, Any]] = {"seed": 1}

    def unlearn(self, loaded: LoadedModel, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> UnlearnOutcome:
        from auditor.world import world_of

        start = time.perf_counter()
        world = world_of(loaded.spec.path)
        if world is None or loaded.fingerprint != fingerprint_dir(world.original):
            raise UserError(
                "retrain: only the embedded world's original model can be retrained exactly "
                f"(input fingerprint {loaded.fingerprint[:12]} is not the world's original)"
            )
        if self.params["seed"] == world.spec.seed:
            raise UserError(f"retrain: seed {world.spec.seed} is the world's reference; pick another seed")
        path = world.retrain(self.params["seed"], progress=print if ctx.progress else None)
        retrained = load_model(ModelSpec(str(path), device=str(loaded.device)))
        info = {
            "method": self.name,
            "params": dict(self.params),
            "path": str(path),
            "cost": {"total_seconds": round(time.perf_counter() - start, 3)},
        }
        return finish(loaded, retrained.model, info)
