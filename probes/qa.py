"""Question answering probes: the forget questions as given, paraphrased, and multi-hop.

Each asks one question per item through the audit's prompt format and scores
the greedy answer (see ``probes.common.score_answers``). ``metric`` picks the
knowledge score K: ``correct`` (the answer contained in the output),
``rouge`` (ROUGE-L recall), ``prob`` (geometric-mean token probability of the
answer) or ``truth`` (max(0, 1 - TOFU truth ratio); items without perturbed
answers are left unscored). The truth ratio scores each item's perturbed
answers too, so it is computed only for ``metric=truth`` or ``truth_ratio=true``
(then as per-item detail).
"""

from __future__ import annotations

from typing import ClassVar

from auditor.plugins import LanguageModel, RunContext
from auditor.types import Item, ProbeResult
from probes.common import (
    QA_METRICS,
    AnswerRequest,
    BaseProbe,
    check_at_least_zero,
    check_choice,
    check_positive,
    qa_items,
    score_answers,
)


class QAProbe(BaseProbe):
    """Direct QA: the forget questions as given."""

    name = "qa"
    summary = "Ask the forget questions as given; K = answer contained in the greedy output (or ROUGE, prob, truth)."
    paper = "https://arxiv.org/abs/2401.06121"  # TOFU
    needs = ("forget",)
    aggregate = "mean"
    direct_rank: ClassVar[int | None] = 0  # r(none, qa) is what a naive evaluation sees
    collateral_kind: ClassVar[str | None] = "qa"
    # answer_margin: new tokens past the longest scored answer's before a row stops (see score_answers)
    defaults = {"metric": "correct", "max_new_tokens": 32, "answer_margin": 16, "truth_ratio": False}
    source: ClassVar[str] = "forget"  # the AuditData field holding the items
    asks: ClassVar[str] = "question and answer"  # what an item needs, for the skip reason

    def validate(self) -> None:
        check_choice(self, "metric", QA_METRICS)
        check_positive(self, "max_new_tokens")
        check_at_least_zero(self, "answer_margin")

    @property
    def metric(self) -> str:
        return self.params["metric"]

    def question(self, item: Item) -> str | None:
        """The question this probe asks about ``item`` (None: the item does not take part)."""
        return item.question

    def measure(self, lm: LanguageModel, ctx: RunContext, model_label: str) -> ProbeResult:
        items = [item for item in qa_items(getattr(ctx.data, self.source).items) if self.question(item)]
        if not items:
            return self.skipped(model_label, f"no {self.source} item has a {self.asks}")
        requests = [AnswerRequest(item, ctx.prompts.prompt(self.question(item))) for item in items]  # type: ignore[arg-type]
        scores = score_answers(
            lm,
            ctx,
            requests,
            metric=self.params["metric"],
            max_new_tokens=self.params["max_new_tokens"],
            truth=self.params["truth_ratio"],
            answer_margin=self.params["answer_margin"],
        )
        return self.mean_result(model_label, scores)


class ParaphraseProbe(QAProbe):
    """Paraphrased QA: each forget item's held-out paraphrased question."""

    name = "paraphrase"
    summary = "Ask each forget item's paraphrased question (never trained on); K as in qa."
    paper = "https://arxiv.org/abs/2401.06121"  # TOFU
    direct_rank = None  # not the questions as given
    collateral_kind = None
    asks = "paraphrased question (and answer)"

    def question(self, item: Item) -> str | None:
        return item.paraphrased_question


class MultihopProbe(QAProbe):
    """Multi-hop QA: composed questions whose answer needs a forgotten fact and a retained one."""

    name = "multihop"
    summary = "Ask composed questions (forgotten fact + retained fact); K = final entity in the greedy output."
    paper = "https://arxiv.org/abs/2305.14795"  # MQuAKE: multi-hop questions
    needs = ("multihop",)
    direct_rank = None  # composed questions, not the forget questions
    collateral_kind = None
    # room for a reasoning chain before the answer, never cut shorter
    defaults = {**QAProbe.defaults, "max_new_tokens": 48, "answer_margin": 48}
    source = "multihop"
