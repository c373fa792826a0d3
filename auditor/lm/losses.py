"""Losses over a batch's labelled tokens (the completion and its EOS; ``auditor.lm.tokens`` says which), shared
by the fine-tune loop, the relearning attacks and the unlearning methods."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from auditor.lm.head import logits_at
from auditor.lm.sampling import Batch


def token_logprobs(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Log-probability of each labelled next token, shape [B, T-1], zero where unlabelled."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    targets = batch.labels[:, 1:]
    mask = targets != -100
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logp * mask


def sequence_logprob(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Summed log-probability of each example's labelled tokens, shape [B]."""
    return token_logprobs(model, batch).sum(dim=1)


def labelled_logits(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits that predict each labelled token, and those tokens.

    The output head runs on those positions only (``head.logits_at``): a
    prompt's positions would cost a vocabulary-wide row each, for no loss term.
    """
    labels = batch.labels[:, 1:]
    rows, positions = torch.nonzero(labels != -100, as_tuple=True)  # logits at t predict token t+1
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "use_cache": False}
    return logits_at(model, rows, positions, **inputs), labels[rows, positions]


def nll_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled tokens."""
    logits, labels = labelled_logits(model, batch)
    return F.cross_entropy(logits.float(), labels)


def bounded_nll(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean over labelled tokens of each token's NLL clamped at ``ln(vocabulary size)``."""
    logits, labels = labelled_logits(model, batch)
    token_nll = F.cross_entropy(logits.float(), labels, reduction="none")
    return token_nll.clamp(max=math.log(logits.size(-1))).mean()


def default_loss(model: torch.nn.Module, batches: Mapping[str, Batch]) -> torch.Tensor:
    """Plain NLL on the stream named ``train``."""
    return nll_loss(model, batches["train"])
