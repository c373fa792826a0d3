"""Quick measurements used to tune and test the methods: QA accuracy, and the same after 4-bit RTN."""

from __future__ import annotations

import torch

from auditor.lm.models import LoadedModel, clone
from auditor.lm.prompts import DEFAULT_FORMAT, PromptFormat
from auditor.lm.quant import quantizable_linears, rtn_quantize_dequantize
from auditor.lm.scoring import ScoringModel
from auditor.stats.metrics import contains_answer
from auditor.types import ItemSet


def qa_accuracy(loaded: LoadedModel, items: ItemSet, prompts: PromptFormat = DEFAULT_FORMAT) -> float:
    """Share of items whose greedy answer contains the true answer (a prompt beyond the context counts as missed)."""
    outputs = ScoringModel(loaded).generate([prompts.prompt(item.question or "") for item in items.items])
    hits = [
        out is not None and contains_answer(out, item.answer or "")
        for out, item in zip(outputs, items.items, strict=True)
    ]
    return sum(hits) / len(hits)


@torch.no_grad()
def rtn_copy(loaded: LoadedModel, bits: int = 4, group_size: int = 128, symmetric: bool = True) -> LoadedModel:
    """A copy with every decoder Linear replaced by its RTN quantize-dequantize (as the quant-rtn attack)."""
    out = clone(loaded)
    for _, linear in quantizable_linears(out.model):
        linear.weight.copy_(rtn_quantize_dequantize(linear.weight, bits, group_size, symmetric))
    return out
