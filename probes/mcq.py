"""Multiple-choice knowledge, the format of WMDP and MMLU: which lettered choice does the model find most likely?

The prompt is the question followed by its choices, one per line as ``A. ...``,
in the audit's prompt format (a user turn with a chat template); each letter is
then scored teacher-forced as the answer, as lm-evaluation-harness scores
MMLU and WMDP. Per item:

- ``letter``: the right letter has the highest log-likelihood (1 or 0);
- ``prob``: the right letter's probability among the k letters (softmax of
  their log-likelihoods);
- ``text``: the right choice has the highest length-normalised likelihood of its
  own text after the bare question (log-likelihood per byte, lm-eval's
  ``acc_norm``).

``metric`` picks K (the mean of one of them); the others are per-item detail.
A model that knows nothing scores 1/k on each: without a reference the floor
is that chance level (the item's ``chance``), not a holdout set.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from typing import Any

from auditor.plugins import LanguageModel, RunContext
from auditor.types import CHANCE_FLOOR, Item, ItemScore, ProbeResult
from probes.common import UNSCORED, BaseProbe, check_choice

LETTERS = string.ascii_uppercase
MCQ_METRICS = ("letter", "prob", "text")


def choice_items(items: Sequence[Item]) -> list[Item]:
    """Items with a question, 2 to 26 choices and the index of the right one."""
    return [
        item
        for item in items
        if item.question and 2 <= len(item.choices) <= len(LETTERS) and item.answer_index is not None
    ]


def lettered_question(item: Item) -> str:
    """The question, then each choice on its own line after its letter."""
    lines = [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(item.choices)]
    return "\n".join([item.question or "", *lines])


def letter_scores(letter_logprobs: Sequence[float], right: int) -> dict[str, Any]:
    """From the log-likelihood of each letter: the chosen letter, whether it is right, and the right one's
    probability among the letters (ties go to the first letter, as argmax does)."""
    top = max(letter_logprobs)
    weights = [math.exp(lp - top) for lp in letter_logprobs]
    chosen = max(range(len(letter_logprobs)), key=letter_logprobs.__getitem__)
    return {
        "chosen": LETTERS[chosen],
        "letter": float(chosen == right),
        "prob": weights[right] / sum(weights),
    }


def text_scores(text_logprobs: Sequence[float], choices: Sequence[str], right: int) -> dict[str, Any]:
    """From the log-likelihood of each choice's text: log-likelihood per byte, and whether the right choice has
    the highest."""
    per_byte = [lp / max(1, len(choice.encode("utf-8"))) for lp, choice in zip(text_logprobs, choices, strict=True)]
    chosen = max(range(len(per_byte)), key=per_byte.__getitem__)
    return {
        "text_logprob_per_byte": [round(x, 6) for x in per_byte],
        "text_chosen": LETTERS[chosen],
        "text": float(chosen == right),
    }


class MCQProbe(BaseProbe):
    """Multiple choice: the letter with the highest log-likelihood after the question and its choices."""

    name = "mcq"
    summary = "Multiple choice (WMDP/MMLU): K = right letter most likely after the question and choices; floor 1/k."
    paper = "https://arxiv.org/abs/2403.03218"  # WMDP
    needs = ("forget",)
    aggregate = "mean"
    direct_rank = 1  # the direct cell when qa has nothing to ask (multiple-choice data)
    collateral_kind = "choice"
    defaults = {"metric": "letter"}

    def validate(self) -> None:
        check_choice(self, "metric", MCQ_METRICS)

    @property
    def metric(self) -> str:
        return self.params["metric"]

    def measure(self, lm: LanguageModel, ctx: RunContext, model_label: str) -> ProbeResult:
        items = choice_items(ctx.data.forget.items)
        if not items:
            return self.skipped(model_label, "no forget item has a question with 2-26 choices and the right one")
        letters, texts, groups = [], [], []
        for item in items:
            prompt, bare = ctx.prompts.prompt(lettered_question(item)), ctx.prompts.prompt(item.question or "")
            letters += [(prompt, ctx.prompts.completion(LETTERS[i])) for i in range(len(item.choices))]
            texts += [(bare, ctx.prompts.completion(choice)) for choice in item.choices]
            groups += [item.key] * len(item.choices)
        stats = lm.token_stats(letters + texts, groups=groups + groups)  # one batched call
        letter_stats, text_stats = stats[: len(letters)], stats[len(letters) :]
        scores, start = [], 0
        for item in items:
            k = len(item.choices)
            scores.append(self._score(item, letter_stats[start : start + k], text_stats[start : start + k]))
            start += k
        return self.mean_result(model_label, scores, floor=CHANCE_FLOOR)

    def _score(self, item: Item, letter_stats: Sequence, text_stats: Sequence) -> ItemScore:
        right = item.answer_index or 0
        detail: dict[str, Any] = {
            "prompt": lettered_question(item),
            "answer": f"{LETTERS[right]}. {item.choices[right]}",
            "chance": 1.0 / len(item.choices),
        }
        if any(s is None for s in (*letter_stats, *text_stats)):
            return ItemScore(item.id, None, detail={**detail, "unscored": UNSCORED})
        letter_logprobs = [s.total for s in letter_stats]
        detail["letter_logprobs"] = [round(x, 6) for x in letter_logprobs]
        detail |= letter_scores(letter_logprobs, right)
        detail |= text_scores([s.total for s in text_stats], item.choices, right)
        chosen = LETTERS.index(detail["text_chosen" if self.metric == "text" else "chosen"])
        detail["output"] = f"{LETTERS[chosen]}. {item.choices[chosen]}"  # the choice the metric reads as the answer
        return ItemScore(item.id, detail[self.metric], detail=detail)
