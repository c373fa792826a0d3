"""Residual knowledge r(attack, probe) and collateral damage, with bootstrap intervals.

    r(a, p) = (K_p(U^a) - K_p(Ref^a)) / (K_p(O) - K_p(Ref))      clipped to [0, 1]

K is a probe's aggregate over items: the mean, or for membership inference
the ROC AUC, the gap (mean over members minus mean over non-members) or the
standardised gap (the gap over the pooled standard deviation). The
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


def _auc_rows(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``values`` [..., n] as the Mann-Whitney statistic (ties counted half)."""
    pos = members.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(values.shape[:-1], np.nan)
    ranks = rankdata(values, axis=-1)
    return (ranks[..., pos].sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _gap_rows(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Mean over members minus mean over non-members, per row of ``values`` [..., n]."""
    pos = members.astype(bool)
    if not pos.any() or pos.all():
        return np.full(values.shape[:-1], np.nan)
    return values[..., pos].mean(-1) - values[..., ~pos].mean(-1)


def _std_gap_rows(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """The gap over the pooled standard deviation of members and non-members (Cohen's d), per row.

    Unchanged when the statistic is scaled or shifted, so a copy whose log-probabilities all blew up (a collapsed
    ascent) is compared with the original on equal terms; 0 where every score is equal.
    """
    pos = members.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos < 2 or n_neg < 2:
        return np.full(values.shape[:-1], np.nan)
    inside = (n_pos - 1) * values[..., pos].var(-1, ddof=1) + (n_neg - 1) * values[..., ~pos].var(-1, ddof=1)
    pooled = np.sqrt(inside / (n_pos + n_neg - 2))
    gap = _gap_rows(values, members)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pooled > 0, gap / np.where(pooled > 0, pooled, 1.0), np.where(gap == 0, 0.0, np.nan))


def aggregate_rows(values: np.ndarray, how: str, members: np.ndarray | None) -> np.ndarray:
    """A probe's aggregate of each row of per-item scores ``values`` [..., n] (one membership for all rows)."""
    if how == "auc":
        return _auc_rows(values, members)
    if how == "gap":
        return _gap_rows(values, members)
    if how == "std_gap":
        return _std_gap_rows(values, members)
    return values.mean(-1)


def auc_rank(scores: np.ndarray, members: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (equal to scikit-learn's roc_auc_score, ties counted half)."""
    return float(_auc_rows(np.asarray(scores, dtype=float), members))


MEMBERSHIP_AGGREGATES = ("auc", "gap", "std_gap")  # aggregates that compare members with non-members
FLOORS = {"auc": 0.5, "gap": 0.0, "std_gap": 0.0}  # their value for a model that never saw either side


def member_gap(values: np.ndarray, members: np.ndarray) -> float:
    """Mean score of members minus mean score of non-members."""
    return float(_gap_rows(np.asarray(values, dtype=float), members))


def standardised_gap(values: np.ndarray, members: np.ndarray) -> float:
    """``member_gap`` over the pooled standard deviation (Cohen's d)."""
    return float(_std_gap_rows(np.asarray(values, dtype=float), members))


def _residuals(k_u: np.ndarray, k_ra: np.ndarray, k_o: np.ndarray, k_r: np.ndarray) -> np.ndarray:
    """r per draw, clipped to [0, 1]; NaN where the original knows no more than the floor."""
    gap = k_o - k_r
    informative = np.isfinite(gap) & (gap > MIN_GAP)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.clip((k_u - k_ra) / np.where(informative, gap, 1.0), 0.0, 1.0)
    return np.where(informative, ratio, np.nan)


def _draw_items(
    rng: np.random.Generator, draws: int, n: int, members: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """[draws, n] item indices drawn with replacement, members and non-members separately (stratified).

    Stratified columns hold the members first, so every draw has the same
    membership per column, which is returned with the indices.
    """
    if members is None:
        return rng.integers(0, n, (draws, n)), None
    strata = [s for s in (np.flatnonzero(members), np.flatnonzero(~members)) if s.size]
    idx = np.concatenate([s[rng.integers(0, s.size, (draws, s.size))] for s in strata], axis=1)
    return idx, members[idx[0]]


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
    """Point estimate and percentile bootstrap interval of r for one cell (all resamples at once)."""

    def k_of(values: np.ndarray, idx: np.ndarray, members: np.ndarray | None) -> np.ndarray:
        return aggregate_rows(values[idx], how, members)  # [draws]

    def k_seeds(values: np.ndarray, idx: np.ndarray, members: np.ndarray | None, picks: np.ndarray) -> np.ndarray:
        per_seed = aggregate_rows(values[:, idx], how, members).T  # [draws, seeds]
        return np.take_along_axis(per_seed, picks, axis=1).mean(1)

    def sides(u_idx, u_members, r_idx, r_members, picks) -> np.ndarray:
        k_o = k_of(scores.original, u_idx, u_members)
        k_u = k_seeds(scores.unlearned, u_idx, u_members, picks)
        if scores.floor is not None:
            floor = np.full_like(k_o, scores.floor)
            return np.stack([k_u, floor, k_o, floor])
        k_r = k_of(scores.reference, r_idx, r_members)
        k_ra = k_seeds(scores.reference_attacked, r_idx, r_members, picks)
        return np.stack([k_u, k_ra, k_o, k_r])

    n = scores.original.size
    m = n if scores.paired or scores.reference is None else scores.reference.size
    n_seeds = scores.unlearned.shape[0]
    ref_members = scores.members if scores.paired else scores.reference_members
    whole = sides(np.arange(n)[None], scores.members, np.arange(m)[None], ref_members, np.arange(n_seeds)[None])
    k_u, k_ra, k_o, k_r = (float(k[0]) for k in whole)
    point = float(_residuals(*whole)[0])
    rng = np.random.default_rng(seed)
    u_idx, u_members = _draw_items(rng, N_RESAMPLES, n, scores.members)
    r_idx, r_members = (u_idx, u_members) if scores.paired else _draw_items(rng, N_RESAMPLES, m, ref_members)
    picks = rng.integers(0, n_seeds, (N_RESAMPLES, n_seeds))
    draws = _residuals(*sides(u_idx, u_members, r_idx, r_members, picks))
    finite = draws[np.isfinite(draws)]
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail]) if finite.size else (np.nan, np.nan)
    if not np.isfinite(point):
        low = high = np.nan
    return Estimate(_nan_to_none(point), _nan_to_none(low), _nan_to_none(high), k_o, k_u, k_r, k_ra)


def relative_drop(original: Sequence[float], unlearned: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """Collateral damage: (K(O) - K(U)) / K(O) on retain items, with a paired bootstrap interval."""
    o, u = np.asarray(original, dtype=float), np.asarray(unlearned, dtype=float)

    def drops(idx: np.ndarray) -> np.ndarray:
        base = o[idx].mean(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(base > 0, (base - u[idx].mean(-1)) / np.where(base > 0, base, 1.0), np.nan)

    rng = np.random.default_rng(seed)
    draws = drops(rng.integers(0, o.size, (N_RESAMPLES, o.size)))
    draws = draws[np.isfinite(draws)]
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail]) if draws.size else (np.nan, np.nan)
    return float(drops(np.arange(o.size))), float(low), float(high)
