"""What a model answers of a QA set: the share of greedy answers that contain the true answer."""

from __future__ import annotations

from auditor.lm.models import LoadedModel
from auditor.lm.prompts import DEFAULT_FORMAT, PromptFormat
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
