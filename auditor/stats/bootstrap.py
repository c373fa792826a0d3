"""Bootstrap resampling as weights, and a probe's aggregates under weights.

A resample is a weight per item: how many times it was drawn. Items are drawn
one by one (``item`` resampling), or whole subjects are drawn with all their
items (``subject`` resampling, a cluster bootstrap: the items of one person or
one book are correlated, so drawing them one by one makes intervals too
narrow). Members and non-members (membership inference) are resampled
separately, so every resample has both.

Every aggregate takes per-item values ``[n]`` and weights ``[draws, n]`` and
gives one value per draw; unit weights give the plain aggregate.
"""

from __future__ import annotations

import numpy as np


def _counts(rng: np.random.Generator, draws: int, size: int) -> np.ndarray:
    """[draws, size] how often each of ``size`` units was drawn, ``size`` draws with replacement per row."""
    picks = rng.integers(0, size, (draws, size))
    flat = picks + size * np.arange(draws)[:, None]
    return np.bincount(flat.ravel(), minlength=draws * size).reshape(draws, size)


def draw_weights(
    rng: np.random.Generator, draws: int, members: np.ndarray | None, groups: np.ndarray | None, n: int
) -> np.ndarray:
    """[draws, n] resampling weights: subjects (``groups``, one label per item) or items, per membership stratum."""
    strata = [np.arange(n)] if members is None else [np.flatnonzero(members), np.flatnonzero(~members)]
    weights = np.zeros((draws, n))
    for stratum in (s for s in strata if s.size):
        if groups is None:
            weights[:, stratum] = _counts(rng, draws, stratum.size)
            continue
        labels, inverse = np.unique(groups[stratum], return_inverse=True)
        weights[:, stratum] = _counts(rng, draws, labels.size)[:, inverse]
    return weights


def _mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    total = weights.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, weights @ values / np.where(total > 0, total, 1.0), np.nan)


def _gap(values: np.ndarray, weights: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Weighted mean over members minus weighted mean over non-members."""
    if not members.any() or members.all():
        return np.full(len(weights), np.nan)
    return _mean(values[members], weights[:, members]) - _mean(values[~members], weights[:, ~members])


def _squared_deviations(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    centre = _mean(values, weights)
    return (weights * (values[None, :] - centre[:, None]) ** 2).sum(-1)


def _std_gap(values: np.ndarray, weights: np.ndarray, members: np.ndarray) -> np.ndarray:
    """The gap over the pooled standard deviation (Cohen's d); 0 where every score is equal."""
    n_pos, n_neg = weights[:, members].sum(-1), weights[:, ~members].sum(-1)
    inside = _squared_deviations(values[members], weights[:, members]) + _squared_deviations(
        values[~members], weights[:, ~members]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = np.sqrt(inside / (n_pos + n_neg - 2))
        gap = _gap(values, weights, members)
        d = np.where(pooled > 1e-12, gap / np.where(pooled > 1e-12, pooled, 1.0), np.where(gap == 0, 0.0, np.nan))
    return np.where((n_pos >= 2) & (n_neg >= 2), d, np.nan)


def _auc(values: np.ndarray, weights: np.ndarray, members: np.ndarray) -> np.ndarray:
    """ROC AUC as the weighted Mann-Whitney statistic: P(member scores above non-member), ties counted half."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first position of each tie group
    ends = np.r_[starts[1:], ordered.size]
    tie_group = np.repeat(np.arange(starts.size), ends - starts)
    negatives = np.where(~members[order], weights[:, order], 0.0)
    below_end = np.cumsum(negatives, axis=1)  # non-member weight up to and including each position
    below_start = np.concatenate([np.zeros((len(weights), 1)), below_end], axis=1)[:, starts]
    below, tied = below_start[:, tie_group], below_end[:, ends - 1][:, tie_group] - below_start[:, tie_group]
    positives = np.where(members[order], weights[:, order], 0.0)
    pairs = positives.sum(-1) * negatives.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pairs > 0, (positives * (below + 0.5 * tied)).sum(-1) / np.where(pairs > 0, pairs, 1.0), np.nan)


def weighted_aggregate(values: np.ndarray, weights: np.ndarray, how: str, members: np.ndarray | None) -> np.ndarray:
    """A probe's aggregate of per-item ``values`` [n] under each row of ``weights`` [draws, n]."""
    if how == "mean":
        return _mean(values, weights)
    if members is None:
        raise ValueError(f"aggregate {how!r} needs membership labels")
    members = members.astype(bool)
    if how == "auc":
        return _auc(values, weights, members)
    if how == "gap":
        return _gap(values, weights, members)
    if how == "std_gap":
        return _std_gap(values, weights, members)
    raise ValueError(f"unknown aggregate {how!r}")


def aggregate(values: np.ndarray, how: str, members: np.ndarray | None) -> float:
    """The aggregate of ``values`` [n] with every item counted once."""
    values = np.asarray(values, dtype=float)
    return float(weighted_aggregate(values, np.ones((1, values.size)), how, members)[0])
