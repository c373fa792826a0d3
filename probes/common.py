"""Shared pieces of the built-in probes: the run template, answer scoring, aggregation.

Every QA-style probe (qa, paraphrase, multihop, in-context) scores an item the
same way once it has a prompt: one greedy generation and the teacher-forced
statistics of the expected answer (and, with ``truth_ratio=true`` or
``metric=truth`` where the item has perturbed answers, of the true and perturbed
answers for TOFU's truth ratio). All of it goes through the memoized model interface
(``generate_scored``: the prompt's generation prefill also scores its answers),
so probes asking for the same (prompt, answer) share one forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from auditor.errors import UserError
from auditor.plugins import LanguageModel, Probe, RunContext
from auditor.stats.metrics import contains_answer, rouge_l_recall, truth_ratio
from auditor.types import Item, ItemScore, ProbeResult

# Why a model left an item unscored: every attacked variant trained on its subject, or it exceeds the context.
UNSCORED = "no model variant could score it (each trained on its subject, or it exceeds the model's context)"
QA_METRICS = ("correct", "rouge", "prob", "truth")


class BaseProbe(Probe):
    """A probe whose ``run`` skips on missing data and otherwise delegates to ``measure``."""

    metric_name: ClassVar[str] = "score"

    def run(self, lm: LanguageModel, ctx: RunContext, model_label: str) -> ProbeResult:
        missing = self.missing_data(ctx.data)
        if missing:
            return self.skipped(model_label, f"the audit data has no {', '.join(missing)} set")
        return self.measure(lm, ctx, model_label)

    def measure(self, lm: LanguageModel, ctx: RunContext, model_label: str) -> ProbeResult:
        raise NotImplementedError

    @property
    def metric(self) -> str:
        return self.metric_name

    def skipped(self, model_label: str, reason: str) -> ProbeResult:
        return ProbeResult(self.name, model_label, self.metric, self.aggregate, None, (), "skipped", reason)

    def mean_result(self, model_label: str, scores: Sequence[ItemScore], **extras: Any) -> ProbeResult:
        """The mean of the scored items (``None`` when no item could be scored)."""
        values = [s.score for s in scores if s.score is not None]
        value = float(sum(values) / len(values)) if values else None
        extras = {"n_items": len(scores), "n_scored": len(values), **extras}
        return ProbeResult(self.name, model_label, self.metric, "mean", value, tuple(scores), extras=extras)


def check_positive(probe: Probe, *names: str) -> None:
    """Raise ``UserError`` unless each named parameter is at least 1."""
    for name in names:
        if probe.params[name] < 1:
            raise UserError(f"{probe.name}: {name} must be at least 1, got {probe.params[name]}")


def check_at_least_zero(probe: Probe, *names: str) -> None:
    """Raise ``UserError`` unless each named parameter is at least 0."""
    for name in names:
        if probe.params[name] < 0:
            raise UserError(f"{probe.name}: {name} must be at least 0, got {probe.params[name]}")


def check_choice(probe: Probe, name: str, choices: Sequence[str]) -> None:
    if probe.params[name] not in choices:
        raise UserError(f"{probe.name}: {name} must be one of {', '.join(choices)}, got {probe.params[name]!r}")


def qa_items(items: Sequence[Item]) -> list[Item]:
    """Items with both a question and an answer."""
    return [item for item in items if item.question is not None and item.answer is not None]


@dataclass(frozen=True)
class AnswerRequest:
    """An item asked with one particular prompt (its question, possibly with context before it)."""

    item: Item
    prompt: str
    detail: dict[str, Any] | None = None  # extra per-item detail (e.g. the context's item ids)


def _answers(item: Item, truth: bool) -> list[str]:
    """Answers scored teacher-forced: the expected one, then (truth ratio) the true one and the perturbed ones."""
    if not truth or not item.perturbed_answers:
        return [item.answer]  # type: ignore[list-item]
    true = item.paraphrased_answer if item.paraphrased_answer is not None else item.answer
    return [item.answer, true, *item.perturbed_answers]  # type: ignore[list-item]


def _geometric_prob(mean_logprob: float) -> float | None:
    return math.exp(mean_logprob) if math.isfinite(mean_logprob) else None


def score_answers(
    lm: LanguageModel,
    ctx: RunContext,
    requests: Sequence[AnswerRequest],
    *,
    metric: str,
    max_new_tokens: int,
    truth: bool = False,
    answer_margin: int | None = None,
) -> list[ItemScore]:
    """Generate greedily from each prompt and score the expected answer; K chosen by ``metric``.

    With ``answer_margin``, a row stops after its longest scored answer's tokens
    plus that many (a model that has not given the answer by then is not about
    to), under ``max_new_tokens``.

    Detail per item: prompt, expected answer, greedy output, ``correct``
    (normalized containment), ``rouge_l`` (recall), ``prob`` (geometric-mean
    token probability of the answer) and, with perturbed answers and ``truth``
    (always when ``metric`` is ``truth``), TOFU's ``truth_ratio`` R and
    ``truth`` = max(0, 1 - R).
    """
    truth = truth or metric == "truth"
    completions = [[ctx.prompts.completion(a) for a in _answers(r.item, truth)] for r in requests]
    answered = lm.generate_scored(
        [r.prompt for r in requests],
        completions,
        max_new_tokens,
        stop=("\n",),
        groups=[r.item.key for r in requests],
        answer_margin=answer_margin,
    )
    scores = []
    for request, result in zip(requests, answered, strict=True):
        detail = {"prompt": request.prompt, "answer": request.item.answer, **(request.detail or {})}
        if result is None:
            scores.append(ItemScore(request.item.id, None, detail={**detail, "unscored": UNSCORED}))
            continue
        output, item_stats = result
        answer = request.item.answer or ""  # requests are made of QA items (``qa_items``): never empty
        detail.update(
            output=output,
            correct=contains_answer(output, answer),
            rouge_l=rouge_l_recall(output, answer),
            prob=_geometric_prob(item_stats[0].mean),
        )
        if len(item_stats) > 1:
            ratio = truth_ratio(item_stats[1].mean, [s.mean for s in item_stats[2:]])
            detail.update(truth_ratio=ratio, truth=max(0.0, 1.0 - ratio) if math.isfinite(ratio) else None)
        value = {
            "correct": float(detail["correct"]),
            "rouge": detail["rouge_l"],
            "prob": detail["prob"],
            "truth": detail.get("truth"),
        }[metric]
        scores.append(ItemScore(request.item.id, value, detail=detail))
    return scores
