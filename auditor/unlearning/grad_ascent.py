"""Gradient ascent and its regularised variants: GA, GradDiff (GA + retain descent), GA + KL.

Losses (``nll`` is the mean next-token cross-entropy over answer tokens + EOS;
``nll_b`` the same with each token's term bounded at ``ln(vocabulary size)``, so
the ascent stops pushing a token once it is less likely than a uniform guess):

- ``ga``:    ``-nll_b(forget)``
- ``ga-gd``: ``-nll_b(forget) + retain_weight * nll(retain)``
- ``ga-kl``: ``-nll_b(forget) + retain_weight * KL(original || model)`` on retain answers

The KL target is the original model, read under ``no_grad`` and never stepped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from auditor.lm.losses import nll_loss
from auditor.lm.models import LoadedModel
from auditor.lm.training import Batch, LossFn
from auditor.plugins import RunContext
from auditor.types import ItemSet
from auditor.unlearning.base import (
    TRAIN_DEFAULTS,
    FineTuneMethod,
    forget_batches,
    forget_streams,
    ga_term,
    kl_to_reference,
)

GA_PAPER = "Jang et al., ACL 2023, Knowledge Unlearning for Mitigating Privacy Risks in Language Models"
TOFU_PAPER = "Maini et al., COLM 2024, TOFU: A Task of Fictitious Unlearning for LLMs"


def graddiff_loss(model: torch.nn.Module, forget: Sequence[Batch], retain: Batch, retain_weight: float) -> torch.Tensor:
    """GradDiff: ascent on the forget answers, descent on the retain answers."""
    return ga_term(model, forget) + retain_weight * nll_loss(model, retain)


def ga_kl_loss(
    model: torch.nn.Module, reference: torch.nn.Module, forget: Sequence[Batch], retain: Batch, retain_weight: float
) -> torch.Tensor:
    """GA + KL: ascent on the forget answers, KL to the original's distributions on the retain answers."""
    return ga_term(model, forget) + retain_weight * kl_to_reference(model, reference, retain)


class GradientAscent(FineTuneMethod):
    """Gradient ascent on the forget answers alone (no retain term: it collapses easily).

    On the embedded world the ascent collapses the tiny model abruptly: within one check interval
    retain answers fall with the forget ones (README, bundled methods table).
    """

    name = "ga"
    summary = "Gradient ascent on the forget answers (negated LM loss)."
    paper = GA_PAPER
    defaults: ClassVar[dict[str, Any]] = {**TRAIN_DEFAULTS, "learning_rate": 5e-4}

    def streams(self, loaded, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> dict[str, list]:
        return forget_streams(forget, ctx, self.name)

    def build_loss(self, loaded: LoadedModel, ctx: RunContext) -> LossFn:
        return lambda model, b: ga_term(model, forget_batches(b))


class GradDiff(FineTuneMethod):
    """GA on the forget answers plus gradient descent on the retain answers."""

    name = "ga-gd"
    summary = "GradDiff: gradient ascent on forget plus gradient descent on retain."
    paper = TOFU_PAPER
    defaults: ClassVar[dict[str, Any]] = {**TRAIN_DEFAULTS, "learning_rate": 1e-3, "retain_weight": 3.0}

    def build_loss(self, loaded: LoadedModel, ctx: RunContext) -> LossFn:
        weight = self.params["retain_weight"]
        return lambda model, b: graddiff_loss(model, forget_batches(b), b["retain"], weight)


class GradAscentKL(FineTuneMethod):
    """GA on the forget answers plus KL to the original model on the retain answers."""

    name = "ga-kl"
    summary = "Gradient ascent on forget plus KL to the original on retain."
    paper = TOFU_PAPER
    defaults: ClassVar[dict[str, Any]] = {**TRAIN_DEFAULTS, "learning_rate": 1e-3, "retain_weight": 5.0}

    def build_loss(self, loaded: LoadedModel, ctx: RunContext) -> LossFn:
        weight, reference = self.params["retain_weight"], loaded.model
        return lambda model, b: ga_kl_loss(model, reference, forget_batches(b), b["retain"], weight)


class GradAscentKLShallow(GradAscentKL):
    """``ga-kl`` in full fine-tuning with a small learning rate: the regime where 4-bit quantization
    restored knowledge in 7B models (Zhang et al., ICLR 2025).

    At the embedded world's size its 4-bit RTN copy forgets as much as it does: no restoration
    (bench/unlearning_methods.py).
    """

    name = "ga-kl-shallow"
    summary = "GA + KL, shallow preset (full fine-tuning, small learning rate)."
    paper = "Zhang et al., ICLR 2025, Catastrophic Failure of LLM Unlearning via Quantization"
    defaults: ClassVar[dict[str, Any]] = {**GradAscentKL.defaults, "lora": False, "learning_rate": 1e-4}
