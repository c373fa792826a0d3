"""What a plugin author imports: the base classes, the records and the helpers the built-in plugins use.

An attack turns a model into one or more attacked models, a probe scores what a model knows of the
forget set, an unlearning method turns the original into an unlearned model. docs/PLUGINS.md shows
each in one file, registered in-tree or through an entry point.
"""

from __future__ import annotations

from attacks.common import outcome as attack_outcome
from attacks.common import skipped as attack_skipped
from attacks.common import variant_label
from auditor.errors import UserError
from auditor.lm.losses import nll_loss
from auditor.lm.models import LoadedModel, clone
from auditor.lm.quant import quantizable_linears
from auditor.lm.training import Batch, LossFn
from auditor.plugins import (
    Attack,
    AttackedVariant,
    AttackOutcome,
    LanguageModel,
    Probe,
    RunContext,
    UnlearningMethod,
    UnlearnOutcome,
)
from auditor.types import AttackResult, AuditData, Item, ItemScore, ItemSet, ProbeResult
from auditor.unlearning.base import TRAIN_DEFAULTS, FineTuneMethod, forget_batches, ga_term
from probes.common import AnswerRequest, BaseProbe, check_positive, qa_items, score_answers

__all__ = [
    "AnswerRequest",
    "Attack",
    "AttackOutcome",
    "AttackResult",
    "AttackedVariant",
    "AuditData",
    "BaseProbe",
    "Batch",
    "FineTuneMethod",
    "Item",
    "ItemScore",
    "ItemSet",
    "LanguageModel",
    "LoadedModel",
    "LossFn",
    "Probe",
    "ProbeResult",
    "RunContext",
    "TRAIN_DEFAULTS",
    "UnlearnOutcome",
    "UnlearningMethod",
    "UserError",
    "attack_outcome",
    "attack_skipped",
    "check_positive",
    "clone",
    "forget_batches",
    "ga_term",
    "nll_loss",
    "qa_items",
    "quantizable_linears",
    "score_answers",
    "variant_label",
]
