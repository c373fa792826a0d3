"""Residual knowledge, bootstrap intervals and verdicts on synthetic scores with known answers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from auditor.errors import UserError
from auditor.stats.bootstrap import aggregate, draw_weights, weighted_aggregate
from auditor.stats.gate import certified_bound, compare_to_baseline, decide
from auditor.stats.outcome import cell_gate, cell_outcome, unlearning_traces
from auditor.stats.policy import Policy, load_policy
from auditor.stats.residual import Scores, estimate_residual, relative_drop
from auditor.types import Cell, ProbeRoles


def scores(o, r, u, ra, members=None):
    return Scores(
        np.asarray(o, float),
        np.asarray([u], float),
        np.asarray(r, float),
        np.asarray([ra], float),
        None if members is None else np.asarray(members, bool),
    )


def member_gap(values, members):
    return aggregate(values, "gap", members)


def standardised_gap(values, members):
    return aggregate(values, "std_gap", members)


def test_auc_equals_sklearn_and_weights_equal_repeated_items():
    rng = np.random.default_rng(0)
    values = np.round(rng.normal(size=60), 1)  # ties included
    members = rng.random(60) > 0.5
    assert aggregate(values, "auc", members) == pytest.approx(roc_auc_score(members, values))
    weights = rng.integers(0, 4, (5, 60)).astype(float)
    for how in ("mean", "gap", "std_gap", "auc"):
        for row in weights:  # a weight is how often an item was drawn: the same as repeating it
            repeated = np.repeat(np.arange(60), row.astype(int))
            expected = aggregate(values[repeated], how, members[repeated])
            got = weighted_aggregate(values, row[None], how, members)[0]
            assert got == pytest.approx(expected), how


def test_subject_resampling_counts_subjects_not_items():
    """Ten subjects of twenty identical items each: the interval is that of ten draws, not two hundred."""
    subjects = np.repeat(np.arange(10), 20)
    known = np.repeat(np.r_[np.ones(5), np.zeros(5)], 20)  # a subject is known entirely or not at all
    o, r = np.ones(200), np.zeros(200)
    by_item = estimate_residual(Scores(o, known[None], r, np.zeros((1, 200))), "mean")
    by_subject = estimate_residual(Scores(o, known[None], r, np.zeros((1, 200)), groups=subjects), "mean")
    assert by_item.residual == by_subject.residual == pytest.approx(0.5)
    # the binomial spread of a mean of n draws at p = 0.5: 1.96 * 0.5 / sqrt(n) each side
    assert by_subject.ci_high - by_subject.residual == pytest.approx(1.96 * 0.5 / np.sqrt(10), abs=0.08)
    assert by_item.ci_high - by_item.residual == pytest.approx(1.96 * 0.5 / np.sqrt(200), abs=0.02)
    weights = draw_weights(np.random.default_rng(0), 50, None, subjects, 200)
    assert (weights.reshape(50, 10, 20) == weights.reshape(50, 10, 20)[..., :1]).all()  # whole subjects drawn
    assert (weights.sum(1) == 200).all()


def test_member_gap_residual_nets_out_the_reference():
    members = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    original = np.where(members, -0.1, -3.0)  # members far likelier under the original
    reference = np.full(100, -2.5)
    unlearned = np.where(members, -2.5 + 0.29, -2.5)  # a tenth of the original's gap left
    assert member_gap(original, members) == pytest.approx(2.9)
    est = estimate_residual(scores(original, reference, unlearned, reference, members), "gap")
    assert est.residual == pytest.approx(0.1) and est.k_reference == pytest.approx(0.0)


def test_standardised_gap_ignores_a_blown_up_scale():
    """A collapsed ascent pushes every answer's log-probability far down: the raw gap grows with the scale while
    the ranking weakens (the real model of the real-models issue: gap 2.22 -> 6.80, AUC 0.69 -> 0.58)."""
    rng = np.random.default_rng(0)
    members = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    original = -13 + np.where(members, 1.1, -1.1) + rng.normal(0, 2.2, 400)
    reference = -13 + rng.normal(0, 2.2, 400)
    collapsed = -220 + np.where(members, 6.0, -6.0) + rng.normal(0, 25, 400)  # 11x the spread, weaker ranking
    collapsed_reference = -220 + rng.normal(0, 25, 400)
    assert member_gap(collapsed, members) > member_gap(original, members)
    assert standardised_gap(17 * original - 5, members) == pytest.approx(standardised_gap(original, members))
    raw = estimate_residual(scores(original, reference, collapsed, collapsed_reference, members), "gap")
    assert raw.residual == 1.0  # the raw gap reads the blown-up scale as all the knowledge left
    std = estimate_residual(scores(original, reference, collapsed, collapsed_reference, members), "std_gap")
    expected = standardised_gap(collapsed, members) / standardised_gap(original, members)
    assert std.residual == pytest.approx(expected, abs=0.05) and std.residual < 0.5


def test_members_less_likely_than_non_members_are_no_residual():
    """The trace unlearning leaves (forget items stand out as unlikely) is not knowledge: r is 0."""
    members = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    original = np.where(members, 0.0, -3.0) + np.linspace(0, 1, 100)
    reference = np.linspace(-2, -1, 100)
    trace = np.where(members, -6.0, -3.0) + np.linspace(0, 1, 100)
    assert standardised_gap(trace, members) < 0
    est = estimate_residual(scores(original, reference, trace, reference, members), "std_gap")
    assert est.residual == 0.0 and est.ci_high == 0.0


def test_residual_point_and_interval():
    n = 100
    o, r = np.ones(n), np.zeros(n)
    half = np.r_[np.ones(n // 2), np.zeros(n // 2)]
    est = estimate_residual(scores(o, r, half, r), "mean")
    assert est.residual == pytest.approx(0.5)
    assert est.ci_low < 0.5 < est.ci_high and est.ci_high - est.ci_low < 0.3
    netted = estimate_residual(scores(o, r, half, half), "mean")  # what the attack alone gives is netted out
    assert netted.residual == 0.0


def test_uninformative_when_original_knows_no_more():
    n = 50
    same = np.full(n, 0.3)
    est = estimate_residual(scores(same, same, same, same), "mean")
    assert est.residual is None and est.ci_low is None


def test_auc_cells_use_members():
    members = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    o = np.r_[np.ones(20), np.zeros(20)]  # perfect separation: AUC 1
    r = np.zeros(40)  # AUC 0.5
    est = estimate_residual(scores(o, r, o, r, members), "auc")
    assert est.k_original == 1.0 and est.k_reference == 0.5 and est.residual == 1.0


def test_seeds_average_and_widen_the_interval():
    n = 200
    o, r = np.ones(n), np.zeros(n)
    quarter, half, three_quarters = (np.r_[np.ones(k), np.zeros(n - k)] for k in (n // 4, n // 2, 3 * n // 4))
    steady = estimate_residual(Scores(o, np.stack([half, half]), r, np.zeros((2, n))), "mean")
    spread = estimate_residual(Scores(o, np.stack([quarter, three_quarters]), r, np.zeros((2, n))), "mean")
    assert spread.residual == pytest.approx(0.5) and spread.k_unlearned == pytest.approx(0.5)
    assert spread.ci_low < 0.3 and spread.ci_high > 0.7  # resampling the two seeds spans both of them
    assert steady.ci_high - steady.ci_low < spread.ci_high - spread.ci_low


def test_unpaired_floor_and_constant_floor():
    members = np.r_[np.ones(30, bool), np.zeros(30, bool)]
    o = np.r_[np.ones(30), np.zeros(30)]
    holdout = np.full(40, 0.2)  # floor from other items, resampled on their own
    est = estimate_residual(Scores(o, np.full((1, 60), 0.35), holdout, np.full((1, 40), 0.2), paired=False), "mean")
    assert est.residual == pytest.approx((0.35 - 0.2) / (0.5 - 0.2))
    assert est.k_reference == pytest.approx(0.2)
    auc = estimate_residual(Scores(o, np.zeros((1, 60)), None, None, members, paired=False, floor=0.5), "auc")
    assert auc.k_original == 1.0 and auc.k_reference == 0.5 and auc.residual == 0.0 and auc.ci_high == 0.0


def test_collateral_drop():
    drop, low, high = relative_drop(np.ones(100), np.r_[np.ones(80), np.zeros(20)])
    assert drop == pytest.approx(0.2) and low < 0.2 < high


def cell(attack, probe, r, lo, hi, n=50, **kw):
    return Cell(attack, probe, r, lo, hi, 1.0, r, 0.0, 0.0, n, True, **kw)


# The bundled probes' roles: qa then mcq ask directly, mia compares members, mia and the lens look past the output.
ROLES = ProbeRoles(("qa", "mcq"), frozenset({"mia"}), frozenset({"mia", "logit-lens"}))
# The verdict rules apart from coverage (which test_removed_needs_coverage covers): no family or probe required.
ANY_PLAN = Policy(required_families=(), past_output_probe=False)


def test_verdicts():
    policy = ANY_PLAN
    assert decide([cell("none", "qa", 0.9, 0.8, 1.0)], policy, 0.0, ROLES).label == "NOT_UNLEARNED"
    hidden = decide([cell("none", "qa", 0.05, 0.0, 0.08), cell("quant", "qa", 0.6, 0.5, 0.7)], policy, 0.0, ROLES)
    assert hidden.label == "HIDDEN" and hidden.deciding_cells == (("quant", "qa"),) and not hidden.gate_passed
    removed = decide([cell("none", "qa", 0.0, 0.0, 0.05), cell("quant", "qa", 0.01, 0.0, 0.06)], policy, 0.0, ROLES)
    assert removed.label == "REMOVED" and removed.gate_passed
    wide = decide([cell("none", "qa", 0.05, 0.0, 0.2), cell("quant", "qa", 0.1, 0.0, 0.3)], policy, 0.0, ROLES)
    assert wide.label == "INCONCLUSIVE"
    few = decide([cell("none", "qa", 0.0, 0.0, 0.0, n=3)], policy, 0.0, ROLES)
    assert few.label == "INCONCLUSIVE"
    damaged = decide([cell("none", "qa", 0.0, 0.0, 0.05)], policy, 0.5, ROLES)
    assert damaged.label == "REMOVED" and not damaged.gate_passed


def test_multiple_choice_is_the_direct_cell_when_qa_has_nothing_to_ask():
    policy = Policy()
    mcq_only = decide([cell("none", "mcq", 0.9, 0.8, 1.0)], policy, 0.0, ROLES)
    assert mcq_only.label == "NOT_UNLEARNED" and mcq_only.deciding_cells == (("none", "mcq"),)
    both = decide([cell("none", "qa", 0.02, 0.0, 0.05), cell("none", "mcq", 0.9, 0.8, 1.0)], policy, 0.0, ROLES)
    assert both.label == "HIDDEN" and both.deciding_cells == (("none", "mcq"),)  # qa first; mcq is then evidence
    assert "none x qa or mcq" in decide([cell("quant", "qa", 0.0, 0.0, 0.05)], policy, 0.0, ROLES).reasons[0]


def test_policy_file_and_overrides(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("thresholds: {hidden: 0.4}\noverrides:\n  - {attack: 'relearn-*', hidden: 0.7}\n")
    policy = load_policy(path)
    assert policy.for_cell("quant-rtn:bits=4", "qa").hidden == 0.4
    assert policy.for_cell("relearn-forget", "qa").hidden == 0.7
    verdict = decide(
        [cell("none", "qa", 0.0, 0.0, 0.05), cell("relearn-forget", "qa", 0.6, 0.5, 0.7)], policy, 0.0, ROLES
    )
    assert verdict.label == "INCONCLUSIVE"
    path.write_text("thresholdz: {}\n")
    with pytest.raises(Exception, match="unknown key 'thresholdz'"):
        load_policy(path)


def test_regression_against_baseline():
    base = {"cells": [{"attack": "a", "probe": "qa", "residual": 0.1, "ci_low": 0.05, "ci_high": 0.15}]}
    rose = [{"attack": "a", "probe": "qa", "residual": 0.4, "ci_low": 0.3, "ci_high": 0.5}]
    same = [{"attack": "a", "probe": "qa", "residual": 0.14, "ci_low": 0.1, "ci_high": 0.2}]
    assert compare_to_baseline(rose, base, Policy()).rose
    assert not compare_to_baseline(same, base, Policy()).rose


def test_small_gap_cells_decide_nothing():
    weak = Cell("none", "paraphrase", 0.65, 0.38, 0.93, 0.14, 0.09, 0.0, 0.0, 120, True)
    verdict = decide([cell("none", "qa", 0.0, 0.0, 0.05), weak], ANY_PLAN, 0.0, ROLES)
    assert verdict.label == "REMOVED"
    assert (
        decide([cell("none", "qa", 0.0, 0.0, 0.05), weak], replace(ANY_PLAN, min_gap=0.1), 0.0, ROLES).label == "HIDDEN"
    )


def test_unlearning_trace_is_reported_apart_and_never_hidden(tmp_path):
    # attack, probe, r, low, high, K(O), K(U), K(Ref), K(Ref^a), n, controlled
    trace = Cell("relearn-forget", "mia", 0.0, 0.0, 0.0, 3.6, -1.5, 0.05, 0.1, 120, True)
    member_like = Cell("none", "mia", 0.1, 0.0, 0.2, 3.6, 0.4, 0.05, None, 120, True)
    knowledge = Cell("none", "paraphrase", 0.0, 0.0, 0.0, 0.9, -1.0, 0.05, None, 120, True)  # not a membership probe
    uninformative = Cell("quant-rtn:bits=4", "mia", 0.0, 0.0, 0.0, 0.1, -3.0, 0.05, 0.05, 120, True)
    found = unlearning_traces([trace, member_like, knowledge, uninformative], {"mia"}, Policy())
    assert found == [
        {"attack": "relearn-forget", "probe": "mia", "k_unlearned": -1.5, "k_floor": 0.1, "below_floor": 1.6}
    ]
    assert decide([cell("none", "qa", 0.0, 0.0, 0.05), trace], ANY_PLAN, 0.0, ROLES).label == "REMOVED"
    path = tmp_path / "policy.yaml"
    path.write_text("unlearning_trace: fail\n")
    assert load_policy(path).unlearning_trace == "fail"
    path.write_text("unlearning_trace: hidden\n")
    with pytest.raises(UserError, match="unlearning_trace must be one of report, fail"):
        load_policy(path)


def test_certified_bound_and_underpowered_cells():
    """The bound is the largest informative upper bound; a cell too noisy to clear the threshold even at zero
    residual is underpowered (never evidence of removal) and still shows HIDDEN when its lower bound says so."""
    policy = ANY_PLAN
    clean = replace(cell("none", "qa", 0.02, 0.0, 0.06), zero_bound=0.04)
    noisy = replace(cell("quant", "paraphrase", 0.03, 0.0, 0.16), zero_bound=0.13)
    wide = replace(cell("relearn", "qa", 0.06, 0.01, 0.14), zero_bound=0.08)
    recovered = replace(cell("relearn", "mia", 0.6, 0.3, 0.9), zero_bound=0.3)
    assert [cell_outcome(c, policy) for c in (clean, noisy, wide, recovered)] == [
        "clean",
        "underpowered",
        "unclear",
        "recovered",
    ]
    assert certified_bound([clean, noisy, wide], policy) == (0.16, [noisy, wide])
    verdict = decide([clean, noisy, wide], policy, 0.0, ROLES)
    assert verdict.label == "INCONCLUSIVE" and verdict.certified_bound == 0.16
    assert verdict.limiting_cells == (("quant", "paraphrase"), ("relearn", "qa"))
    assert any("underpowered, even a zero residual would reach 0.13" in r for r in verdict.reasons)
    assert decide([clean, noisy, recovered], policy, 0.0, ROLES).label == "HIDDEN"
    removed = decide([clean], policy, 0.0, ROLES)
    assert removed.label == "REMOVED" and removed.certified_bound == 0.06 and removed.limiting_cells == ()


def test_statistics_load_without_torch():
    """auditor.stats decides verdicts from numbers alone: it loads (and runs) in an environment without torch."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; sys.modules['torch'] = None; "  # any import of torch now fails
        "from auditor.stats import bootstrap, gate, metrics, residual; "
        "est = residual.estimate_residual(residual.Scores(np.ones(20), np.zeros((1, 20)), np.zeros(20), "
        "np.zeros((1, 20)), groups=np.repeat(np.arange(5), 4)), 'mean'); "
        "assert est.residual == 0.0 and gate.Policy().thresholds.removed == 0.1; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if sys.modules.get(m)))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stderr


def test_zero_bound_depends_on_the_floor_not_on_the_unlearned_model():
    """The bound a zero residual would reach: two independent draws of a model that knows what the floor knows,
    the binomial spread sqrt(2 p (1 - p) / n) over the original's lead, whatever the unlearned model scored."""
    rng = np.random.default_rng(0)
    n, p = 480, 0.06
    reference, original = (rng.random(n) < p).astype(float), np.ones(n)
    bounds = [
        estimate_residual(Scores(original, unlearned[None], reference, reference[None]), "mean").zero_bound
        for unlearned in (original, reference, np.zeros(n))
    ]
    expected = 1.96 * np.sqrt(2 * reference.mean() * (1 - reference.mean()) / n) / (1 - reference.mean())
    assert bounds[0] == bounds[1] == bounds[2] == pytest.approx(expected, rel=0.15)


def test_a_cell_whose_attack_failed_the_self_check_is_no_evidence():
    """The original attacked the same way must keep its own residual within the tolerance of 1: below it the
    attack destroyed knowledge (its clean cells would read as removal), above it the cell's scale is off."""
    policy = ANY_PLAN
    destroyed = cell("relearn-forget", "qa", 0.0, 0.0, 0.03, family="relearning", self_check=0.12)
    inflated = cell("relearn-forget", "mia", 0.9, 0.8, 1.0, family="relearning", self_check=12.5)
    kept = cell("quant-rtn:bits=4", "qa", 0.0, 0.0, 0.03, family="quantization", self_check=0.95)
    assert [cell_outcome(c, policy) for c in (destroyed, inflated, kept)] == ["self-check failed"] * 2 + ["clean"]
    direct = cell("none", "qa", 0.0, 0.0, 0.05)
    shown = decide([direct, inflated], policy, 0.0, ROLES)  # the inflated cell shows nothing, and covers nothing
    assert shown.label == "INCONCLUSIVE" and any("relearning" in r for r in shown.reasons)
    verdict = decide([direct, destroyed, kept], policy, 0.0, ROLES)
    assert verdict.certified_bound == 0.05  # the failed cell's bound says nothing either
    assert cell_outcome(destroyed, replace(policy, self_check_tolerance=0.9)) == "clean"


def test_removed_needs_a_self_checked_powered_cell_of_each_family_and_past_the_output():
    policy = Policy()
    direct = cell("none", "qa", 0.0, 0.0, 0.05)
    quant = cell("quant-rtn:bits=4", "qa", 0.0, 0.0, 0.04, family="quantization", self_check=1.0)
    relearn = cell("relearn-forget", "qa", 0.0, 0.0, 0.04, family="relearning", self_check=0.98)
    lens = cell("none", "logit-lens", 0.0, 0.0, 0.05)
    assert decide([direct, quant, relearn, lens], policy, 0.0, ROLES).label == "REMOVED"
    no_lens = decide([direct, quant, relearn], policy, 0.0, ROLES)
    assert no_lens.label == "INCONCLUSIVE" and any("looks past the model's output" in r for r in no_lens.reasons)
    destructive = replace(relearn, self_check=0.0)
    gap = decide([direct, quant, destructive, lens], policy, 0.0, ROLES)
    assert gap.label == "INCONCLUSIVE"
    assert any("relearning" in r and "failed the self-check" in r and "kept 0.00" in r for r in gap.reasons)
    no_quant = decide([direct, relearn, lens], policy, 0.0, ROLES)
    assert no_quant.label == "INCONCLUSIVE" and any("no quantization attack in the plan" in r for r in no_quant.reasons)
    ablation = cell("direction-ablation", "qa", 0.0, 0.0, 0.3, family="ablation", self_check=1.0, zero_bound=0.2)
    underpowered = decide([direct, quant, relearn, lens, ablation], policy, 0.0, ROLES)
    assert underpowered.label == "INCONCLUSIVE" and any("ablation" in r for r in underpowered.reasons)
    fewer = replace(policy, required_families=("relearning",), past_output_probe=False)
    assert decide([direct, relearn], fewer, 0.0, ROLES).label == "REMOVED"


def test_a_cell_stands_against_the_gate_as_the_policy_fails():
    hidden = decide([cell("none", "qa", 0.05, 0.0, 0.08), cell("quant", "qa", 0.6, 0.5, 0.7)], ANY_PLAN, 0.0, ROLES)
    assert cell_gate("recovered", True, hidden, ANY_PLAN) == "failed"
    lenient = replace(ANY_PLAN, fail_on=("NOT_UNLEARNED",))
    assert cell_gate("recovered", True, hidden, lenient) == "passed"
    assert [cell_gate(o, False, hidden, ANY_PLAN) for o in ("clean", "unclear", "self-check failed", "skipped")] == [
        "passed",
        "inconclusive",
        "inconclusive",
        "skipped",
    ]
