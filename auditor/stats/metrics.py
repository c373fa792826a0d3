"""Per-item and per-set metrics computed with the field's libraries.

ROUGE-L with ``rouge-score`` (as TOFU and MUSE), AUC and ROC with
scikit-learn, so numbers are comparable with published ones (bootstrap
intervals: ``auditor.stats.bootstrap``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def contains_answer(output: str, answer: str) -> bool:
    """Whether the normalized answer occurs in the normalized output as whole words."""
    target = normalize(answer)
    return bool(target) and f" {target} " in f" {normalize(output)} "


@lru_cache(maxsize=1)
def _rouge_scorer():
    """rouge-score's ROUGE-L with its default stemming tokenizer, memoized per text (outputs repeat across models)."""
    from rouge_score import rouge_scorer, tokenizers

    stemming = tokenizers.DefaultTokenizer(use_stemmer=True)

    class MemoTokenizer(tokenizers.Tokenizer):
        @lru_cache(maxsize=1 << 16)  # noqa: B019 - one instance, alive for the process
        def _tokens(self, text: str) -> tuple[str, ...]:
            return tuple(stemming.tokenize(text))

        def tokenize(self, text: str) -> list[str]:
            return list(self._tokens(text))

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=MemoTokenizer())


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall of ``prediction`` against ``reference`` (the share of the reference recovered)."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].recall)


def truth_ratio(paraphrased_mean_logprob: float, perturbed_mean_logprobs: Sequence[float]) -> float:
    """TOFU's truth ratio: mean length-normalised probability of wrong answers over that of the right one.

    Inputs are mean log-probabilities per token, so ``exp`` of each is the
    geometric-mean token probability P(a|q)^(1/|a|). Below 1: the model prefers
    the true answer.
    """
    perturbed = np.exp(np.asarray(perturbed_mean_logprobs, dtype=float))
    return float(perturbed.mean() / np.exp(paraphrased_mean_logprob))


def roc_auc(scores: Sequence[float], members: Sequence[bool]) -> float:
    """Area under the ROC curve (higher score = more likely a member)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(members, dtype=int)
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, dtype=float)))


def roc_curve_points(scores: Sequence[float], members: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of the ROC curve."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(members, dtype=int), np.asarray(scores, dtype=float))
    return fpr, tpr


def tpr_at_fpr(scores: Sequence[float], members: Sequence[bool], fpr_target: float) -> float:
    """Highest true-positive rate whose false-positive rate stays at or below ``fpr_target``."""
    fpr, tpr = roc_curve_points(scores, members)
    allowed = tpr[fpr <= fpr_target]
    return float(allowed.max()) if allowed.size else 0.0
