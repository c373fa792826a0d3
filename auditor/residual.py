"""Residual knowledge r(attack, probe) and collateral damage, with bootstrap intervals.

    r(a, p) = (K_p(U^a) - K_p(Ref^a)) / (K_p(O) - K_p(Ref))      clipped to [0, 1]

K is a probe's aggregate over items: the mean, or for membership inference
the ROC AUC or the gap (mean over members minus mean over non-members). The
interval is a percentile bootstrap that resamples items (the same items for all
four models, members and non-members separately) and, for attacks run with
several seeds, the seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

N_RESAMPLES = 1000
CONFIDENCE = 0.95
MIN_GAP = 1e-6  # K(O) - K(Ref) at or below this: the original knows nothing more; the cell is uninformative


@dataclass(frozen=True)
class Scores:
    """Per-item scores: ``[items]`` for plain models, ``[seeds, items]`` for attacked ones.

    With a reference model the four models are scored on the same items (paired).
    Without one the floor comes from holdout items (``paired=False``: resampled on
    their own), or is a constant (``floor``: e.g. AUC 0.5).
    """

    original: np.ndarray  # [n]
    unlearned: np.ndarray  # [s, n]
    reference: np.ndarray | None  # [m]; m == n when paired
    reference_attacked: np.ndarray | None  # [s, m]
    members: np.ndarray | None = None  # [n] bool, for AUC
    reference_members: np.ndarray | None = None  # [m] bool, when not paired
    paired: bool = True
    floor: float | None = None


def auc_rank(scores: np.ndarray, members: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (equal to scikit-learn's roc_auc_score, ties counted half)."""
    pos = members.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


MEMBERSHIP_AGGREGATES = ("auc", "gap")  # aggregates that compare members with non-members
FLOORS = {"auc": 0.5, "gap": 0.0}  # their value for a model that never saw either side


def member_gap(values: np.ndarray, members: np.ndarray) -> float:
    """Mean score of members minus mean score of non-members."""
    pos = members.astype(bool)
    if not pos.any() or pos.all():
        return float("nan")
    return float(values[pos].mean() - values[~pos].mean())


def aggregate(values: np.ndarray, how: str, members: np.ndarray | None) -> float:
    """A probe's aggregate of per-item scores."""
    if how == "auc":
        return auc_rank(values, members)
    if how == "gap":
        return member_gap(values, members)
    return float(values.mean())


def _residual(k_u: float, k_ra: float, k_o: float, k_r: float) -> float:
    gap = k_o - k_r
    if not np.isfinite(gap) or gap <= MIN_GAP:
        return float("nan")
    return float(np.clip((k_u - k_ra) / gap, 0.0, 1.0))


def _resample_items(rng: np.random.Generator, n: int, members: np.ndarray | None) -> np.ndarray:
    """Item indices drawn with replacement; members and non-members separately (stratified)."""
    if members is None:
        return rng.integers(0, n, n)
    parts = []
    for stratum in (np.flatnonzero(members), np.flatnonzero(~members)):
        parts.append(stratum[rng.integers(0, stratum.size, stratum.size)])
    return np.concatenate(parts)


@dataclass(frozen=True)
class Estimate:
    residual: float | None
    ci_low: float | None
    ci_high: float | None
    k_original: float
    k_unlearned: float
    k_reference: float
    k_reference_attacked: float


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def estimate_residual(scores: Scores, how: str, seed: int = 0) -> Estimate:
    """Point estimate and percentile bootstrap interval of r for one cell."""

    def k_of(values: np.ndarray, idx: np.ndarray, members: np.ndarray | None) -> float:
        return aggregate(values[idx], how, None if members is None else members[idx])

    def sides(u_idx, r_idx, seeds) -> tuple[float, float, float, float]:
        k_o = k_of(scores.original, u_idx, scores.members)
        k_u = float(np.mean([k_of(scores.unlearned[s], u_idx, scores.members) for s in seeds]))
        if scores.floor is not None:
            return k_u, scores.floor, k_o, scores.floor
        ref_members = scores.members if scores.paired else scores.reference_members
        k_r = k_of(scores.reference, r_idx, ref_members)
        k_ra = float(np.mean([k_of(scores.reference_attacked[s], r_idx, ref_members) for s in seeds]))
        return k_u, k_ra, k_o, k_r

    n = scores.original.size
    m = n if scores.paired or scores.reference is None else scores.reference.size
    n_seeds = scores.unlearned.shape[0]
    k_u, k_ra, k_o, k_r = sides(np.arange(n), np.arange(m), np.arange(n_seeds))
    point = _residual(k_u, k_ra, k_o, k_r)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(N_RESAMPLES):
        u_idx = _resample_items(rng, n, scores.members)
        r_idx = u_idx if scores.paired else _resample_items(rng, m, scores.reference_members)
        draws.append(_residual(*sides(u_idx, r_idx, rng.integers(0, n_seeds, n_seeds))))
    finite = np.asarray([d for d in draws if np.isfinite(d)])
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail]) if finite.size else (np.nan, np.nan)
    if not np.isfinite(point):
        low = high = np.nan
    return Estimate(_nan_to_none(point), _nan_to_none(low), _nan_to_none(high), k_o, k_u, k_r, k_ra)


def relative_drop(original: Sequence[float], unlearned: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """Collateral damage: (K(O) - K(U)) / K(O) on retain items, with a paired bootstrap interval."""
    o, u = np.asarray(original, dtype=float), np.asarray(unlearned, dtype=float)

    def drop(idx: np.ndarray) -> float:
        base = o[idx].mean()
        return float((base - u[idx].mean()) / base) if base > 0 else float("nan")

    rng = np.random.default_rng(seed)
    draws = np.asarray([drop(rng.integers(0, o.size, o.size)) for _ in range(N_RESAMPLES)])
    draws = draws[np.isfinite(draws)]
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail]) if draws.size else (np.nan, np.nan)
    return drop(np.arange(o.size)), float(low), float(high)
