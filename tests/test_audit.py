"""The audit end to end on the embedded world: known-answer calibration, resume, determinism, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import audit_world, show_cells

from auditor.campaign.demo import DEMO_METHODS, run_demo
from auditor.engine.plan import DEMO_PRESET

pytestmark = pytest.mark.slow  # every test here audits models of the embedded world

CALIBRATION_PRESET = DEMO_PRESET  # the known-answer controls are audited as `make demo` audits them
CONTROLS = ("noop", "idk", "quant-hide", "quant-hide-3bit", "retrain")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """Pieces of the original, the reference and the attacked reference are shared by the audits."""
    return tmp_path_factory.mktemp("audit-cache")


@pytest.fixture(scope="session")
def demo_run(world, tmp_path_factory):
    """The default demo (controls and one method per family, its preset), as ``make demo`` runs it."""
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, CALIBRATION_PRESET, DEMO_METHODS, None, jobs=2, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def calibration(demo_run):
    """Each demo method's results.json."""
    return {name: json.loads((demo_run / name / "results.json").read_text()) for name in DEMO_METHODS}


def test_noop_is_not_unlearned(calibration):
    results = calibration["noop"]
    assert results["verdict"]["label"] == "NOT_UNLEARNED", show_cells(results)
    direct = next(c for c in results["cells"] if c["attack"] == "none" and c["probe"] == "qa")
    assert direct["ci_low"] > 0.5, show_cells(results)


def test_retrain_is_removed(calibration):
    results = calibration["retrain"]
    assert results["verdict"]["label"] == "REMOVED", show_cells(results)
    informative = [c for c in results["cells"] if c["residual"] is not None]
    assert informative and all(c["ci_high"] < 0.10 for c in informative), show_cells(results)


def test_idk_is_hidden_by_relearning_or_in_context(calibration):
    results = calibration["idk"]
    assert results["verdict"]["label"] == "HIDDEN", show_cells(results)
    deciding = {tuple(c) for c in results["verdict"]["deciding_cells"]}
    assert any(a.startswith("relearn") or p.startswith("in-context") for a, p in deciding), show_cells(results)
    for attack, probe in deciding:
        cell = next(c for c in results["cells"] if (c["attack"], c["probe"]) == (attack, probe))
        assert cell["ci_low"] > 0.25, show_cells(results)


def test_quant_hide_is_hidden_by_quantization(calibration):
    results = calibration["quant-hide"]
    assert results["verdict"]["label"] == "HIDDEN", show_cells(results)
    assert ("quant-rtn:bits=4", "qa") in {tuple(c) for c in results["verdict"]["deciding_cells"]}, show_cells(results)
    direct = next(c for c in results["cells"] if c["attack"] == "none" and c["probe"] == "qa")
    assert direct["ci_high"] < 0.5, show_cells(results)


def test_a_hiding_confined_to_3_bit_bins_is_not_hidden_to_the_fixed_core_plan(calibration):
    """quant-hide-3bit: neither the planned 4-bit RTN nor relearning brings its answers back (test_audit_runs shows
    the adaptive search does)."""
    fixed = calibration["quant-hide-3bit"]
    assert fixed["verdict"]["label"] in ("REMOVED", "INCONCLUSIVE"), show_cells(fixed)
    assert fixed["verdict"]["certified_bound"] > 0.1  # not REMOVED here in fact: its direct cell keeps 0.1


def test_retrain_certified_bound_uses_subjects(calibration):
    results = calibration["retrain"]
    verdict, statistics = results["verdict"], results["statistics"]
    informative = [c for c in results["cells"] if c["outcome"] not in ("skipped", "uninformative")]
    assert statistics["resampling"] == "subjects" and {c["n_subjects"] for c in informative} >= {120}
    assert verdict["certified_bound"] == max(c["ci_high"] for c in informative) < 0.10, show_cells(results)


def subjects_subset(data, n_subjects: int):
    """The audit data with only the first ``n_subjects`` forget subjects (their QA items, multi-hop and texts)."""
    from auditor.data import fingerprint_items
    from auditor.types import ItemSet

    keep = list(dict.fromkeys(item.group for item in data.forget.items))[:n_subjects]

    def only(items):
        picked = tuple(item for item in items.items if item.group in keep)
        return ItemSet(f"{items.name}-{n_subjects}", items.kind, picked, items.source, fingerprint_items(picked))

    return replace(data, forget=only(data.forget), multihop=only(data.multihop), forget_texts=only(data.forget_texts))


def test_a_small_forget_set_says_how_far_it_can_see(world, data, demo_run, tmp_path):
    """20 subjects instead of 120: the exact retrain cannot be certified REMOVED; the audit says how far it sees
    (a certified bound above the threshold, far below the hidden one), and the hiding controls stay HIDDEN."""
    small = subjects_subset(data, 20)
    # the 40 relearning steps the default takes on the whole world (its 3 passes would be 8 steps here)
    plan = {"attacks": ("quant-rtn:bits=4", "relearn-forget:epochs=16"), "probes": ("qa", "paraphrase", "multihop")}
    runs = {
        name: audit_world(world, small, demo_run / "models" / name, tmp_path / name, tmp_path / "cache", **plan)
        for name in ("retrain", "idk", "quant-hide")
    }
    retrain = runs["retrain"]
    assert retrain["verdict"]["label"] == "INCONCLUSIVE", show_cells(retrain)
    assert 0.10 < retrain["verdict"]["certified_bound"] < 0.25, show_cells(retrain)
    assert retrain["verdict"]["limiting_cells"], show_cells(retrain)
    assert all(c["n_subjects"] == 20 for c in retrain["cells"] if c["residual"] is not None)
    assert runs["idk"]["verdict"]["label"] == "HIDDEN", show_cells(runs["idk"])
    assert runs["quant-hide"]["verdict"]["label"] == "HIDDEN", show_cells(runs["quant-hide"])


def test_the_cost_ledger_counts_the_tokens_of_every_phase(calibration):
    """Each computed phase carries its tokens by kind and its ratio to the original's bare throughput."""
    fine_tunes = 0
    for name, results in calibration.items():
        bare = results["cost"]["bare"]
        assert bare["forward"] > bare["train"] > 0 and bare["tokens"] > 0
        phases = results["phases"]
        qa = [p for p in phases if p["phase"].startswith("probe qa on ")]
        # noop's copy is the original (same weights and config): its audit computes no probe, it reads the pieces
        assert (not qa) if name == "noop" else qa, [p["phase"] for p in phases]
        assert all(p["tokens"]["prefill"] > 0 and p["tokens"]["trained"] == 0 and p["x_bare"] > 0 for p in qa)
        for phase in phases:
            if phase["phase"].startswith("attack relearn") and not phase["reused"]:
                fine_tunes += 1
                assert phase["tokens"]["trained"] > 0 and phase["tokens"]["decoded"] == 0, phase
        loads = [p for p in phases if p["phase"].startswith("load ")]
        assert loads and all(p["tokens"] == {"prefill": 0, "decoded": 0, "trained": 0} for p in loads)
        probes = results["cost"]["by_kind"].get("probe")  # none computed: no entry
        prefill = sum(p["tokens"]["prefill"] for p in phases if p["phase"].startswith("probe "))
        assert (probes["tokens"]["prefill"] if probes else 0) == prefill
    assert fine_tunes > 0


def test_results_validate_against_schema(calibration):
    from reports.schema import SCHEMA_VERSION, validate_results

    for results in calibration.values():
        validate_results(results)  # raises on any violation
        assert results["schema_version"] == SCHEMA_VERSION and results["cells"]


def readme_leaderboard() -> dict[str, str]:
    """Method -> verdict, from the README's demo leaderboard table."""
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    table = text[text.index("| method | verdict |") :].split("\n\n")[0].splitlines()[2:]
    return {cols[1].strip(): cols[2].strip() for cols in (line.split("|") for line in table)}


def test_demo_writes_the_leaderboard_of_the_readme(demo_run):
    summary, per_attack = (demo_run / "leaderboard.md").read_text().strip().split("\n\n")
    verdicts = {cols[1].strip(): cols[2].strip() for cols in (line.split("|") for line in summary.splitlines()[2:])}
    assert list(verdicts) == list(DEMO_METHODS)
    assert verdicts == readme_leaderboard(), "README's leaderboard differs from `make demo`'s"
    header, _, *rows = per_attack.splitlines()  # r(attack, qa) per method, for no attack and each of the plan's
    assert header.startswith("| method | r(none, qa) | r(quant-rtn:bits=4, qa) |")
    assert [row.split("|")[1].strip() for row in rows] == list(DEMO_METHODS)
    html = (demo_run / "index.html").read_text()
    for name in verdicts:
        assert f'href="{name}/report.html"' in html and (demo_run / name / "report.html").is_file()


# Share of the original's retain accuracy each method keeps at least. GradDiff has no retain target: its ascent
# wears the retain answers down on the way to the forget goal, by an amount that differs between CPUs (retain
# 0.887 on an AMD EPYC, 0.785 on an Intel Xeon), so its bound only catches a collapse (plain ga ends near 0.07).
RETAIN_KEPT = {"ga-gd": 0.65, "npo-gd": 0.8, "ext-sub": 0.8}


@pytest.mark.parametrize("name", sorted(RETAIN_KEPT))
def test_methods_meet_their_goal_and_keep_retain(demo_run, name):
    """Each method's own goal (forget accuracy at most 25% of the original's) lies well inside these bounds."""
    record = json.loads((demo_run / "models" / name / "unlearning.json").read_text())
    before, after = record["before"], record["after"]
    assert after["forget"]["accuracy"] <= 0.5 * before["forget"]["accuracy"], record["info"]["stop_reason"]
    kept = RETAIN_KEPT[name] * before["retain"]["accuracy"]
    assert after["retain"]["accuracy"] >= kept, record["info"]["stop_reason"]


def test_recovered_items_show_answers_and_membership_statistics(calibration):
    from auditor.stats.metrics import contains_answer

    results = calibration["idk"]
    outcomes = {(c["attack"], c["probe"]): c["outcome"] for c in results["cells"]}
    items = results["recovered_items"]
    assert items and all(outcomes[(i["attack"], i["probe"])] == i["cell_outcome"] for i in items)
    shown = {(i["attack"], i["probe"]) for i in items}  # 7 recovering cells share the 40 items: no 5 cells take all
    assert len(shown) > 5 and ("relearn-forget", "mia") in shown and len(items) <= 40
    qa = [i for i in items if i["probe"] == "qa"]
    assert qa and all(contains_answer(i["outputs"]["attacked"], i["expected"]) for i in qa)
    mia = [i for i in items if i["probe"] == "mia"]  # the statistic of each model, not an output
    assert mia and all(float(i["outputs"]["attacked"]) > float(i["outputs"]["unlearned"]) for i in mia)
    assert calibration["retrain"]["recovered_items"] == []
