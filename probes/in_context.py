"""In-context probes: QA pairs written before the forget question in the audit's prompt format.

With a chat template the pairs are earlier turns of the same conversation
(user question, assistant answer); in plain text, whole prompts with their
answers, each followed by ``separator``.

- ``few-shot`` (``in-context``): k retain QA pairs, drawn per item with the seed,
  show the model the task; K = answer contained in the greedy output.
- ``relearn`` (``in-context-relearn``): the other forget items of the same
  subject, given with their answers, then the held-out question: does telling
  the model part of what it forgot bring the rest back?

Shots are dropped, last first, until the prompt and its answer budget fit the
model's context; each item records how many were dropped (``shots_dropped``).

The same prompts go to every model, so the reference nets out what the context
alone gives.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
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

MODES = ("few-shot", "relearn")


def context_prompt(ctx: RunContext, shots: Sequence[Item], question: str, separator: str) -> str:
    """The shots as answered QA pairs, then the question: earlier turns of one conversation in a chat
    format, else whole prompts each followed by ``separator``."""
    return ctx.prompts.conversation([(s.question or "", s.answer or "") for s in shots], question, separator)


class InContextProbe(BaseProbe):
    """Few-shot QA: k retained QA pairs before each forget question."""

    name = "in-context"
    summary = "Put k retained QA pairs (few-shot) before each forget question; K = answer in the greedy output."
    paper = "https://arxiv.org/abs/2402.16835"  # Lynch et al., eight methods to evaluate robust unlearning
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    aggregate = "mean"
    defaults = {
        "mode": "few-shot",
        "k": 4,
        "metric": "correct",
        "max_new_tokens": 32,
        "answer_margin": 16,  # as qa's
        "separator": "\n\n",
    }

    def validate(self) -> None:
        check_choice(self, "mode", MODES)
        check_choice(self, "metric", QA_METRICS)
        check_positive(self, "k", "max_new_tokens")
        check_at_least_zero(self, "answer_margin")

    @property
    def metric(self) -> str:
        return self.params["metric"]

    def _pools(self, ctx: RunContext, items: list[Item]) -> dict[str, list[Item]] | None:
        """Candidate shots per item id; None when the mode cannot run on this data."""
        if self.params["mode"] == "few-shot":
            retain = [(r.key, r) for r in qa_items(ctx.data.retain.items)]
            return {item.id: [r for key, r in retain if key != item.key] for item in items}
        by_group: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            if item.group is not None:
                by_group[item.group].append(item)
        if not by_group:
            return None
        return {
            item.id: [o for o in by_group[item.group] if o.id != item.id]
            for item in items
            if item.group is not None and len(by_group[item.group]) > 1
        }

    def measure(self, lm: LanguageModel, ctx: RunContext, model_label: str) -> ProbeResult:
        items = qa_items(ctx.data.forget.items)
        pools = self._pools(ctx, items)
        if pools is None:
            return self.skipped(model_label, "forget items have no subject (group), so there is no related context")
        k, separator = self.params["k"], self.params["separator"]
        requests = []
        for item in items:
            pool = pools.get(item.id)
            if not pool:
                continue
            shots = random.Random(f"{ctx.seed}:{item.id}").sample(pool, min(k, len(pool)))
            prompt = context_prompt(ctx, shots, item.question, separator)  # type: ignore[arg-type]
            dropped = 0
            while shots and not lm.fits([prompt], self.params["max_new_tokens"])[0]:  # the model's context: fewer shots
                shots, dropped = shots[:-1], dropped + 1
                prompt = context_prompt(ctx, shots, item.question, separator)  # type: ignore[arg-type]
            detail = {"context_items": [s.id for s in shots], "shots_dropped": dropped}
            requests.append(AnswerRequest(item, prompt, detail))
        if not requests:
            return self.skipped(model_label, f"no forget item has context items for mode {self.params['mode']}")
        scores = score_answers(
            lm,
            ctx,
            requests,
            metric=self.params["metric"],
            max_new_tokens=self.params["max_new_tokens"],
            answer_margin=self.params["answer_margin"],
        )
        dropped = sum(r.detail["shots_dropped"] for r in requests)  # type: ignore[index]
        return self.mean_result(model_label, scores, mode=self.params["mode"], shots_dropped=dropped)


class InContextRelearnProbe(InContextProbe):
    """In-context relearning: the subject's other forget facts in the prompt, then the held-out question."""

    name = "in-context-relearn"
    summary = "Give other forget facts of the same subject in the prompt, then ask the held-out one."
    needs = ("forget",)
    defaults = {**InContextProbe.defaults, "mode": "relearn"}
