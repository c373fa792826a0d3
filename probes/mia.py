"""Membership inference: can the model tell forget items (members) from holdout items (non-members)?

Convention, for every statistic: HIGHER = MORE LIKELY A MEMBER (a model trained
on an item gives its tokens higher log-probabilities), so the ROC AUC of a
statistic with members as positives is above 0.5 when the model still carries
the forget set's imprint and near 0.5 for a model that never saw it.

With ``log p_t`` the log-probability of scored token t (the answer tokens of a
QA pair, or every token of a text scored with an empty prompt, see
``auditor.lm.tokens``):

- ``loss``: mean_t log p_t (minus the average NLL);
- ``zlib``: sum_t log p_t / zlib-compressed byte length of the scored text
  (Carlini et al. 2021);
- ``min_k``: Min-K% (Shi et al. 2024): mean of the k% lowest log p_t
  (at least one token);
- ``min_k_plus_plus``: Min-K%++ (Zhang et al. 2025): per token
  (log p_t - mu_t) / sigma_t with mu_t, sigma_t^2 the mean and variance of
  log p over the model's own next-token distribution, then the mean of the
  k% lowest;
- ``reference``: mean_t log p_t under the model minus the same under the
  audit's reference model (``ctx.reference_lm``), when there is one.

The probe's value, the K of the residual, is set by ``aggregate``:

- ``std_gap`` (default): the statistic's mean over members minus its mean
  over non-members, over their pooled standard deviation (Cohen's d; 0 for a
  model that saw neither). Unlike the AUC it does not saturate (capped at 1,
  with a sampling error of a few hundredths at a few hundred items), so the
  residual can resolve small leftovers; unlike the raw gap it does not grow
  with the scale of the log-probabilities, which an ascent can blow up for
  members and non-members alike.
- ``gap``: the raw difference of means, in the statistic's own units (nats).
- ``auc``: the ROC AUC of the statistic (0.5 for a model that saw neither).

Only a member-like difference (members more likely, as in the original) counts
as residual knowledge: the residual is clipped at 0. The reverse, members
standing out as *less* likely than non-members, is the trace unlearning leaves
(MUSE's PrivLeak counts it as a leak too): the probe reports it in ``extras``
and it never makes a verdict HIDDEN.

The ROC AUC of every statistic, TPR at 1% and 5% FPR and the ROC curve are
reported in ``extras`` either way.

``source``: ``qa`` scores the answers of the forget (members) and holdout
(non-members) QA items; ``text`` every token of the forget and holdout texts;
``auto`` (default) the texts when both are given, else the QA items. Answers to
factual questions make a noisy membership signal for models that never saw
them: two such models rate answers by their own priors, which differ from seed
to seed, while a text the model never saw is equally foreign to both.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from auditor.errors import UserError
from auditor.lm.scoring import TokenStats
from auditor.plugins import LanguageModel, RunContext
from auditor.stats.bootstrap import aggregate
from auditor.stats.metrics import roc_auc, roc_curve_points, tpr_at_fpr
from auditor.types import MEMBERSHIP_AGGREGATES, Aggregate, AuditData, Item, ItemScore, ProbeResult
from probes.common import UNSCORED, BaseProbe, check_choice, qa_items

STATISTICS = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference")
SOURCES = {"qa": ("forget", "holdout"), "text": ("forget_texts", "holdout_texts")}
MAX_ROC_POINTS = 101


def lowest_k_mean(values: np.ndarray, k: float) -> float:
    """Mean of the ``k`` share of lowest values (at least one value)."""
    n = max(1, int(values.size * k))
    return float(np.sort(values)[:n].mean())


def statistics(stats: TokenStats, scored_text: str, k: float, reference: TokenStats | None) -> dict[str, float]:
    """Every membership statistic of one item, each oriented higher = more likely a member."""
    assert stats.var_logprob is not None and stats.mean_logprob is not None  # scored with moments=True
    sigma = np.sqrt(stats.var_logprob)
    safe = np.where(sigma > 0, sigma, 1.0)
    normalized = np.where(sigma > 0, (stats.logprobs - stats.mean_logprob) / safe, 0.0)
    values = {
        "loss": stats.mean,
        "zlib": stats.total / len(zlib.compress(scored_text.encode("utf-8"))),
        "min_k": lowest_k_mean(stats.logprobs, k),
        "min_k_plus_plus": lowest_k_mean(normalized, k),
    }
    if reference is not None:
        values["reference"] = stats.mean - reference.mean
    return values


def thin(fpr: np.ndarray, tpr: np.ndarray, limit: int = MAX_ROC_POINTS) -> tuple[list[float], list[float]]:
    """At most ``limit`` ROC points, evenly spaced along the curve, ends kept."""
    if fpr.size > limit:
        keep = np.unique(np.linspace(0, fpr.size - 1, limit).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return [float(x) for x in fpr], [float(y) for y in tpr]


class MIAProbe(BaseProbe):
    """Membership inference of forget items against holdout items; value = ``aggregate`` of one statistic."""

    name = "mia"
    looks_past_output = True
    summary = (
        "Membership inference (loss, zlib, Min-K%, Min-K%++, reference) of forget vs holdout; value = d, gap or AUC."
    )
    paper = "https://arxiv.org/abs/2404.02936"  # Min-K%++ (and Min-K%: arXiv 2310.16789)
    needs = ("forget", "holdout")
    defaults = {"source": "auto", "statistic": "min_k", "k": 0.2, "aggregate": "std_gap"}  # Min-K%: MUSE's PrivLeak

    def validate(self) -> None:
        check_choice(self, "source", ("auto", *SOURCES))
        check_choice(self, "statistic", STATISTICS)
        check_choice(self, "aggregate", MEMBERSHIP_AGGREGATES)
        if not 0.0 < self.params["k"] <= 1.0:
            raise UserError(f"{self.name}: k must lie in (0, 1], got {self.params['k']}")

    @property
    def metric(self) -> str:
        return self.params["statistic"]

    @property
    def aggregate(self) -> Aggregate:  # type: ignore[override]
        return self.params["aggregate"]

    def source(self, data: AuditData) -> str:
        """``auto``: the forget and holdout texts when both are given, else the QA items."""
        if self.params["source"] != "auto":
            return self.params["source"]
        return "text" if data.forget_texts is not None and data.holdout_texts is not None else "qa"

    def missing_data(self, data: AuditData) -> list[str]:
        return [name for name in SOURCES[self.source(data)] if getattr(data, name) is None]

    def _pairs(self, ctx: RunContext, source: str) -> list[tuple[Item, bool, tuple[str, str]]]:
        """(item, member, (prompt, scored text)) for every member, then every non-member."""
        rows = []
        for is_member, name in zip((True, False), SOURCES[source], strict=True):
            items = getattr(ctx.data, name).items
            if source == "qa":
                prompts = ctx.prompts
                rows += [
                    (i, is_member, (prompts.prompt(i.question or ""), prompts.completion(i.answer or "")))
                    for i in qa_items(items)  # both set: qa_items keeps only those
                ]
            else:
                rows += [(i, is_member, ("", i.text)) for i in items if i.text]
        return rows

    def measure(self, lm: LanguageModel, ctx: RunContext, model_label: str) -> ProbeResult:
        primary = self.params["statistic"]
        if primary == "reference" and ctx.reference_lm is None:
            return self.skipped(model_label, "statistic 'reference' needs a reference model, and the audit has none")
        source = self.source(ctx.data)
        rows = self._pairs(ctx, source)
        if not any(m for _, m, _ in rows) or all(m for _, m, _ in rows):
            return self.skipped(model_label, "membership inference needs both member and non-member items")
        pairs = [pair for _, _, pair in rows]
        groups = [item.key for item, _, _ in rows]
        stats = lm.token_stats(pairs, groups=groups, moments=True)
        reference_lm = ctx.reference_lm
        references = reference_lm.token_stats(pairs, groups=groups) if reference_lm is not None else None
        scores = []
        for i, (item, member, (_, text)) in enumerate(rows):
            item_stats = stats[i]
            if item_stats is None or item_stats.n_tokens == 0 or (references is not None and references[i] is None):
                reason = UNSCORED if item_stats is None else "no scored tokens"
                scores.append(ItemScore(item.id, None, member, {"unscored": reason}))
                continue
            reference = references[i] if references is not None else None
            values = statistics(item_stats, text, self.params["k"], reference)
            scores.append(ItemScore(item.id, values[primary], member, {**values, "n_tokens": item_stats.n_tokens}))
        return self._result(model_label, scores, source)

    def _result(self, model_label: str, scores: list[ItemScore], source: str) -> ProbeResult:
        scored = [s for s in scores if s.score is not None and math.isfinite(s.score)]
        members = [bool(s.member) for s in scored]
        extras: dict = {"n_items": len(scores), "n_scored": len(scored), "source": source}
        if not scored or all(members) or not any(members):
            reason = "too few scored members or non-members for an AUC"
            return ProbeResult(
                self.name, model_label, self.metric, self.aggregate, None, tuple(scores), reason=reason, extras=extras
            )
        names = [name for name in STATISTICS if name in scored[0].detail]
        extras["auc"] = {name: roc_auc([s.detail[name] for s in scored], members) for name in names}
        primary = [float(s.score) for s in scored if s.score is not None]  # ``scored``: items with a score
        extras["tpr_at_fpr"] = {"0.01": tpr_at_fpr(primary, members, 0.01), "0.05": tpr_at_fpr(primary, members, 0.05)}
        fpr, tpr = thin(*roc_curve_points(primary, members))
        extras["roc"] = {"fpr": fpr, "tpr": tpr}
        extras["gap"] = aggregate(np.asarray(primary), "gap", np.asarray(members))
        extras["std_gap"] = aggregate(np.asarray(primary), "std_gap", np.asarray(members))
        value = extras["auc"][self.metric] if self.aggregate == "auc" else extras[self.aggregate]
        return ProbeResult(self.name, model_label, self.metric, self.aggregate, value, tuple(scores), extras=extras)
