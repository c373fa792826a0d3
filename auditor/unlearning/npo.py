"""Negative preference optimization (NPO) against the original model, alone or with retain descent.

``L_NPO = -(2 / beta) * mean( log sigmoid( -beta * (log pi(y|x) - log pi_ref(y|x)) ) )`` over the
forget answers, where ``log pi`` is the summed log-probability of the answer tokens
(+EOS, ``auditor.lm.training.sequence_logprob``) and ``pi_ref`` is the original, read
under ``no_grad``. ``npo-gd`` adds ``retain_weight * nll(retain)``. As ``beta -> 0``
the loss tends to gradient ascent; the sigmoid weight slows the ascent on answers
that are already unlikely, which is why NPO collapses more slowly than GA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from auditor.errors import UserError
from auditor.lm.losses import nll_loss, sequence_logprob
from auditor.lm.models import LoadedModel
from auditor.lm.training import Batch, LossFn
from auditor.plugins import RunContext
from auditor.types import ItemSet
from auditor.unlearning.base import TRAIN_DEFAULTS, FineTuneMethod, forget_batches, forget_streams

PAPER = "Zhang et al., COLM 2024, Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning"


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO loss from per-example summed log-probabilities under the model and the reference."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


def npo_term(model: torch.nn.Module, reference: torch.nn.Module, forget: Sequence[Batch], beta: float) -> torch.Tensor:
    """NPO on each forget batch, summed."""
    total = torch.zeros(())
    for batch in forget:
        with torch.no_grad():
            ref_logp = sequence_logprob(reference, batch)
        total = total + npo_loss(sequence_logprob(model, batch), ref_logp, beta)
    return total


class NPO(FineTuneMethod):
    """NPO on the forget answers, the original as reference.

    Without a retain term the tiny model's retain answers fall with the forget ones (README,
    bundled methods table).
    """

    name = "npo"
    summary = "Negative preference optimization on the forget answers (original as reference)."
    paper = PAPER
    defaults: ClassVar[dict[str, Any]] = {**TRAIN_DEFAULTS, "learning_rate": 1e-3, "beta": 1.0}

    def validate(self) -> None:
        super().validate()
        if self.params["beta"] <= 0:
            raise UserError(f"{self.name}: beta must be positive")

    def streams(self, loaded, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> dict[str, list]:
        return forget_streams(forget, ctx, self.name)

    def build_loss(self, loaded: LoadedModel, ctx: RunContext) -> LossFn:
        beta, reference = self.params["beta"], loaded.model
        return lambda model, b: npo_term(model, reference, forget_batches(b), beta)


class NPOGradDiff(NPO):
    """NPO on the forget answers plus gradient descent on the retain answers."""

    name = "npo-gd"
    summary = "NPO on forget plus gradient descent on retain."
    defaults: ClassVar[dict[str, Any]] = {**NPO.defaults, "retain_weight": 2.0}

    streams = FineTuneMethod.streams  # the forget and the retain answers again (NPO alone has no retain stream)

    def build_loss(self, loaded: LoadedModel, ctx: RunContext) -> LossFn:
        beta, weight, reference = self.params["beta"], self.params["retain_weight"], loaded.model
        return lambda model, b: (
            npo_term(model, reference, forget_batches(b), beta) + weight * nll_loss(model, b["retain"])
        )


class NPOGradDiffShallow(NPOGradDiff):
    """``npo-gd`` in full fine-tuning with a small learning rate: the regime where 4-bit quantization
    restored knowledge in 7B models (Zhang et al., ICLR 2025).

    At the embedded world's size its 4-bit RTN copy forgets as much as it does: no restoration.
    """

    name = "npo-gd-shallow"
    summary = "NPO + retain descent, shallow preset (full fine-tuning, small learning rate)."
    paper = "Zhang et al., ICLR 2025, Catastrophic Failure of LLM Unlearning via Quantization"
    defaults: ClassVar[dict[str, Any]] = {**NPOGradDiff.defaults, "lora": False, "learning_rate": 1e-4}
