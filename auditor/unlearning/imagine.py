"""Deliberate imagination (Dong et al., 2024): self-distillation towards an imagined, non-memorized answer.

The teacher is the original, read under ``no_grad``. At each answer position of a
forget item, the teacher's logit of the memorized next token is lowered by the
imagination ``strength`` and the logits of the ``top_k`` other most plausible
tokens are raised by it; the student is trained towards the softmax of these
logits (KL(target || student)). Positions whose label is EOS keep the teacher's
own distribution, so the student still stops. Plus ``retain_weight * nll(retain)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from auditor.errors import UserError
from auditor.lm.losses import nll_loss
from auditor.lm.models import LoadedModel
from auditor.lm.training import Batch, LossFn
from auditor.plugins import RunContext
from auditor.unlearning.base import TRAIN_DEFAULTS, FineTuneMethod, forget_batches

PAPER = "Dong et al., 2024, Unmemorization in Large Language Models via Self-Distillation and Deliberate Imagination"


def imagination_targets(
    teacher_logits: torch.Tensor, labels: torch.Tensor, strength: float, top_k: int, keep_token: int | None = None
) -> torch.Tensor:
    """Target distributions ``[N, V]`` from teacher logits ``[N, V]`` and memorized next tokens ``[N]``.

    The memorized token's logit drops by ``strength``; the ``top_k`` highest other logits rise by it.
    Rows whose label is ``keep_token`` stay the teacher's distribution.
    """
    logits = teacher_logits.float()
    others = logits.scatter(-1, labels.unsqueeze(-1), float("-inf"))
    k = min(top_k, logits.size(-1) - 1)
    shift = torch.zeros_like(logits)
    shift.scatter_(-1, others.topk(k, dim=-1).indices, strength)
    shift.scatter_(-1, labels.unsqueeze(-1), -strength)
    if keep_token is not None:
        shift = torch.where((labels == keep_token).unsqueeze(-1), torch.zeros_like(shift), shift)
    return torch.softmax(logits + shift, dim=-1)


def imagine_loss(
    model: torch.nn.Module, teacher: torch.nn.Module, forget: Batch, strength: float, top_k: int, eos: int | None
) -> torch.Tensor:
    """Mean KL(imagined target || student) over the labelled positions of one forget batch."""
    mask = forget.labels[:, 1:] != -100
    labels = forget.labels[:, 1:][mask]
    with torch.no_grad():
        teacher_logits = teacher(input_ids=forget.input_ids, attention_mask=forget.attention_mask).logits[:, :-1]
        target = imagination_targets(teacher_logits[mask], labels, strength, top_k, eos)
    student = model(input_ids=forget.input_ids, attention_mask=forget.attention_mask).logits[:, :-1][mask]
    logp = torch.log_softmax(student.float(), dim=-1)
    return (target * (torch.log(target.clamp(min=1e-30)) - logp)).sum(-1).mean()


class Imagine(FineTuneMethod):
    """Self-distillation from the original with deliberate imagination on the forget answers, plus retain NLL."""

    name = "imagine"
    summary = "Deliberate imagination: self-distil towards plausible non-memorized tokens on forget answers."
    paper = PAPER
    defaults: ClassVar[dict[str, Any]] = {
        **TRAIN_DEFAULTS,
        "learning_rate": 1e-3,
        "strength": 10.0,  # logit shift of the memorized token (down) and of the top_k others (up)
        "top_k": 5,
        "retain_weight": 1.0,
    }

    def validate(self) -> None:
        super().validate()
        if self.params["top_k"] < 1 or self.params["strength"] < 0:
            raise UserError("imagine: top_k must be >= 1 and strength >= 0")

    def build_loss(self, loaded: LoadedModel, ctx: RunContext) -> LossFn:
        p, teacher, eos = self.params, loaded.model, loaded.tokenizer.eos_token_id
        return lambda model, b: (
            sum(imagine_loss(model, teacher, f, p["strength"], p["top_k"], eos) for f in forget_batches(b))
            + p["retain_weight"] * nll_loss(model, b["retain"])
        )
