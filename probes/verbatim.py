"""Verbatim memorization (MUSE VerbMem): a passage's prefix in, greedy continuation out.

K = ROUGE-L recall of the continuation against the true one. An item with
both ``question`` and ``answer`` (MUSE verbmem's ``prompt``/``gt``) gives the
prefix and the true continuation; otherwise ``text`` is cut after the word at
``prefix_fraction`` of its words. The generation budget is the true
continuation's token count (from the teacher-forced pass over prefix and
continuation), capped by ``max_new_tokens``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from auditor.errors import UserError
from auditor.plugins import LanguageModel, RunContext
from auditor.stats.metrics import rouge_l_recall
from auditor.types import Item, ItemScore, ProbeResult
from probes.common import UNSCORED, BaseProbe, check_positive

_WORD = re.compile(r"\S+")


def split_passage(item: Item, prefix_fraction: float) -> tuple[str, str] | None:
    """(prefix, true continuation) of a passage item; None when it cannot be split."""
    if item.question is not None and item.answer is not None:
        return item.question, item.answer
    if not item.text:
        return None
    words = list(_WORD.finditer(item.text))
    if len(words) < 2:
        return None
    n = min(len(words) - 1, max(1, round(len(words) * prefix_fraction)))
    cut = words[n - 1].end()
    return item.text[:cut], item.text[cut:]


class VerbatimProbe(BaseProbe):
    """Continue each forget passage from its prefix; K = ROUGE-L recall of the true continuation."""

    name = "verbatim"
    summary = "Continue forget passages from their prefix; K = ROUGE-L recall of the true continuation (MUSE)."
    paper = "https://arxiv.org/abs/2407.06460"  # MUSE
    needs = ("forget_texts",)
    aggregate = "mean"
    metric_name = "rouge_l"
    defaults = {"prefix_fraction": 0.5, "max_new_tokens": 128}

    def validate(self) -> None:
        if not 0.0 < self.params["prefix_fraction"] < 1.0:
            raise UserError(f"{self.name}: prefix_fraction must lie strictly between 0 and 1")
        check_positive(self, "max_new_tokens")

    def measure(self, lm: LanguageModel, ctx: RunContext, model_label: str) -> ProbeResult:
        passages = []
        for item in ctx.data.forget_texts.items:  # type: ignore[union-attr]
            split = split_passage(item, self.params["prefix_fraction"])
            if split is not None and split[1].strip():
                passages.append((item, *split))
        if not passages:
            return self.skipped(model_label, "no forget passage has a prefix and a continuation")
        groups = [item.key for item, _, _ in passages]
        stats = lm.token_stats([(prefix, rest) for _, prefix, rest in passages], groups=groups)
        budgets: dict[int, list[int]] = defaultdict(list)  # one batched generation per budget
        for i, s in enumerate(stats):
            if s is not None:
                budgets[min(self.params["max_new_tokens"], max(1, s.n_tokens))].append(i)
        outputs: dict[int, str | None] = {}
        for budget, indices in sorted(budgets.items()):
            texts = lm.generate([passages[i][1] for i in indices], budget, stop=(), groups=[groups[i] for i in indices])
            outputs.update(zip(indices, texts, strict=True))
        scores = []
        for i, (item, prefix, rest) in enumerate(passages):
            detail: dict[str, Any] = {"prompt": prefix, "answer": rest}  # the prefix and the true continuation
            output, stat = outputs.get(i), stats[i]
            if output is None or stat is None:
                scores.append(ItemScore(item.id, None, detail={**detail, "unscored": UNSCORED}))
                continue
            rouge = rouge_l_recall(output, rest)
            detail.update(output=output, rouge_l=rouge, n_tokens=stat.n_tokens, mean_logprob=stat.mean)
            scores.append(ItemScore(item.id, rouge, detail=detail))
        return self.mean_result(model_label, scores)
