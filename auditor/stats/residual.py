"""Residual knowledge r(attack, probe) and collateral damage, with bootstrap intervals.

    r(a, p) = (K_p(U^a) - K_p(Ref^a)) / (K_p(O) - K_p(Ref))      clipped to [0, 1]

K is a probe's aggregate over items: the mean, or for membership inference
the ROC AUC, the gap (mean over members minus mean over non-members) or the
standardised gap (the gap over the pooled standard deviation). The
interval is a percentile bootstrap (``auditor.stats.bootstrap``): it resamples
subjects with all their items where the items name one, else items (the same
draws for all four models, members and non-members separately) and, for
attacks run with several seeds, the seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from auditor.stats.bootstrap import draw_weights, weighted_aggregate

N_RESAMPLES = 1000  # the policy's defaults (``Policy.resamples``, ``Policy.confidence``)
CONFIDENCE = 0.95
MIN_GAP = 1e-6  # K(O) - K(Ref) at or below this: the original knows nothing more; the cell is uninformative


@dataclass(frozen=True)
class Scores:
    """Per-item scores: ``[items]`` for plain models, ``[seeds, items]`` for attacked ones.

    With a reference model the four models are scored on the same items (paired).
    Without one the floor comes from holdout items (``paired=False``: resampled on
    their own), or is known (``floor``: a constant such as AUC 0.5, or each
    item's chance level, averaged over the same resampled items).
    """

    original: np.ndarray  # [n]
    unlearned: np.ndarray  # [s, n]
    reference: np.ndarray | None  # [m]; m == n when paired
    reference_attacked: np.ndarray | None  # [s, m]
    members: np.ndarray | None = None  # [n] bool, for AUC
    reference_members: np.ndarray | None = None  # [m] bool, when not paired
    paired: bool = True
    floor: float | np.ndarray | None = None  # a constant, or [n] per item (chance levels)
    groups: np.ndarray | None = None  # [n] subject of each item: resample subjects (None: items)
    reference_groups: np.ndarray | None = None  # [m], when not paired


FLOORS = {"auc": 0.5, "gap": 0.0, "std_gap": 0.0}  # membership aggregates of a model that saw neither side


def _unclipped(k_u: np.ndarray, k_ra: np.ndarray, k_o: np.ndarray, k_r: np.ndarray) -> np.ndarray:
    """r per draw before clipping; NaN where the original knows no more than the floor."""
    gap = k_o - k_r
    informative = np.isfinite(gap) & (gap > MIN_GAP)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(informative, (k_u - k_ra) / np.where(informative, gap, 1.0), np.nan)


def _known_floor(floor: float | np.ndarray, weights: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A known floor per draw: the constant, or the mean chance level of each draw's items."""
    if np.ndim(floor) == 0:
        return np.full_like(like, float(floor))
    return weighted_aggregate(np.asarray(floor, dtype=float), weights, "mean", None)


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn: resamples, and the confidence of the two-sided percentile interval."""

    resamples: int = N_RESAMPLES
    confidence: float = CONFIDENCE


def _percentiles(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = draws[np.isfinite(draws)]
    tail = (1 - confidence) / 2 * 100
    return tuple(np.percentile(finite, [tail, 100 - tail])) if finite.size else (np.nan, np.nan)


@dataclass(frozen=True)
class Estimate:
    residual: float | None
    ci_low: float | None
    ci_high: float | None
    k_original: float
    k_unlearned: float
    k_reference: float
    k_reference_attacked: float
    zero_bound: float | None = None  # the upper bound a residual of 0 would get: the sampling spread above the point


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def estimate_residual(scores: Scores, how: str, seed: int = 0, boot: Bootstrap = Bootstrap()) -> Estimate:
    """Point estimate and percentile bootstrap interval of r for one cell (all resamples at once)."""

    def k_seeds(values: np.ndarray, weights: np.ndarray, members: np.ndarray | None, picks: np.ndarray) -> np.ndarray:
        per_seed = np.stack([weighted_aggregate(v, weights, how, members) for v in values], axis=1)  # [draws, seeds]
        return np.take_along_axis(per_seed, picks, axis=1).mean(1)

    def sides(u_weights, r_weights, picks) -> np.ndarray:
        k_o = weighted_aggregate(scores.original, u_weights, how, scores.members)
        k_u = k_seeds(scores.unlearned, u_weights, scores.members, picks)
        if scores.floor is not None:
            floor = _known_floor(scores.floor, u_weights, k_o)
            return np.stack([k_u, floor, k_o, floor])
        assert scores.reference is not None and scores.reference_attacked is not None  # a floor, or both
        k_r = weighted_aggregate(scores.reference, r_weights, how, ref_members)
        k_ra = k_seeds(scores.reference_attacked, r_weights, ref_members, picks)
        return np.stack([k_u, k_ra, k_o, k_r])

    n = scores.original.size
    m = n if scores.paired or scores.reference is None else scores.reference.size
    n_seeds = scores.unlearned.shape[0]
    ref_members = scores.members if scores.paired else scores.reference_members
    whole = sides(np.ones((1, n)), np.ones((1, m)), np.arange(n_seeds)[None])
    k_u, k_ra, k_o, k_r = (float(k[0]) for k in whole)
    raw_point = float(_unclipped(*whole)[0])
    point = float(np.clip(raw_point, 0.0, 1.0))
    rng = np.random.default_rng(seed)
    draws = boot.resamples
    u_weights = draw_weights(rng, draws, scores.members, scores.groups, n)
    r_weights = u_weights if scores.paired else draw_weights(rng, draws, ref_members, scores.reference_groups, m)
    picks = rng.integers(0, n_seeds, (draws, n_seeds))
    raw = _unclipped(*sides(u_weights, r_weights, picks))
    low, high = _percentiles(np.clip(raw, 0.0, 1.0), boot.confidence)
    zero_bound = _zero_bound(scores, how, k_o - k_r, np.random.default_rng([seed, 1]), k_seeds, boot)
    if not np.isfinite(point):
        low = high = zero_bound = np.nan
    estimate = (_nan_to_none(point), _nan_to_none(low), _nan_to_none(high), k_o, k_u, k_r, k_ra)
    return Estimate(*estimate, zero_bound=_nan_to_none(zero_bound))


def point_residual(scores: Scores, how: str) -> float | None:
    """The residual of every item counted once, unclipped (None where the original knows no more than the
    floor): for a self-check, where a value above 1 says as much as one below."""
    n = scores.original.size
    m = n if scores.paired or scores.reference is None else scores.reference.size
    members = scores.members if scores.paired else scores.reference_members
    k_o = weighted_aggregate(scores.original, np.ones((1, n)), how, scores.members)
    k_u = np.mean([weighted_aggregate(v, np.ones((1, n)), how, scores.members) for v in scores.unlearned], axis=0)
    if scores.floor is not None:
        k_r = k_ra = _known_floor(scores.floor, np.ones((1, n)), k_o)
    else:
        assert scores.reference is not None and scores.reference_attacked is not None
        k_r = weighted_aggregate(scores.reference, np.ones((1, m)), how, members)
        k_ra = np.mean([weighted_aggregate(v, np.ones((1, m)), how, members) for v in scores.reference_attacked], 0)
    value = float(_unclipped(k_u, k_ra, k_o, k_r)[0])
    return value if np.isfinite(value) else None


def _zero_bound(scores: Scores, how: str, gap: float, rng: np.random.Generator, k_seeds, boot: Bootstrap) -> float:
    """The upper bound of a cell whose unlearned model knows what its floor knows, and no more.

    Such a model differs from the floor only as two independent models of the
    same knowledge do: modelled as two independent resamples of the floor's own
    item scores (the attacked reference's; without a reference, the holdout
    floor's, or the original's when the floor is a constant). It depends on the
    original and the floor only, not on the unlearned model.
    """
    if not np.isfinite(gap) or gap <= MIN_GAP:
        return np.nan
    values: np.ndarray | None
    if scores.floor is not None:
        values, members, groups = scores.original[None], scores.members, scores.groups
    elif scores.paired:
        values, members, groups = scores.reference_attacked, scores.members, scores.groups
    else:
        values, members, groups = scores.reference_attacked, scores.reference_members, scores.reference_groups
    assert values is not None
    n_seeds, n = values.shape
    picks = rng.integers(0, n_seeds, (boot.resamples, n_seeds))
    first, second = (draw_weights(rng, boot.resamples, members, groups, n) for _ in range(2))
    null = (k_seeds(values, first, members, picks) - k_seeds(values, second, members, picks)) / gap
    return min(1.0, max(0.0, _percentiles(null, boot.confidence)[1]))  # a residual, and so its bound, is in [0, 1]


def relative_drop(
    original: Sequence[float],
    unlearned: Sequence[float],
    seed: int = 0,
    groups: np.ndarray | None = None,
    boot: Bootstrap = Bootstrap(),
) -> tuple[float, float, float]:
    """Collateral damage: (K(O) - K(U)) / K(O) on retain items, with a paired bootstrap interval."""
    o, u = np.asarray(original, dtype=float), np.asarray(unlearned, dtype=float)

    def drops(weights: np.ndarray) -> np.ndarray:
        base = weighted_aggregate(o, weights, "mean", None)
        with np.errstate(divide="ignore", invalid="ignore"):
            after = weighted_aggregate(u, weights, "mean", None)
            return np.where(base > 0, (base - after) / np.where(base > 0, base, 1.0), np.nan)

    rng = np.random.default_rng(seed)
    low, high = _percentiles(drops(draw_weights(rng, boot.resamples, None, groups, o.size)), boot.confidence)
    return float(drops(np.ones((1, o.size)))[0]), float(low), float(high)
