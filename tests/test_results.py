"""``build_results`` on synthetic scores (no model): one decision, carried through results.json to every renderer."""

from __future__ import annotations

import re

import pytest

from auditor.data import fingerprint_items
from auditor.engine.plan import make_plan
from auditor.engine.records import AuditConfig, AuditScores, ScoreKey
from auditor.engine.results import build_results
from auditor.stats.policy import Policy, Thresholds
from auditor.types import NO_ATTACK, AttackResult, AuditData, Item, ItemScore, ItemSet, ModelSpec, ProbeResult
from reports.html import render_html
from reports.junit import render_junit
from reports.markdown import render_markdown
from reports.schema import validate_results

N, SUBJECTS = 80, 20
ATTACK = "quant-rtn:bits=4"


def item_set(name: str) -> ItemSet:
    items = tuple(Item(f"{name}-{i}", f"q{i}?", f"a{i}", group=f"{name}-person-{i % SUBJECTS}") for i in range(N))
    return ItemSet(name, "qa", items, f"{name}.jsonl", fingerprint_items(items))


def probe_result(label: str, known: float, items: ItemSet) -> ProbeResult:
    """The first ``known`` share of the items answered right."""
    scores = tuple(
        ItemScore(item.id, float(i < known * N), detail={"output": "x", "answer": item.answer})
        for i, item in enumerate(items.items)
    )
    value = sum(s.score for s in scores) / N
    return ProbeResult("qa", label, "correct", "mean", value, scores)


def synthetic(known_after_attack: float) -> tuple[AuditConfig, AuditData, AuditScores]:
    forget, retain = item_set("forget"), item_set("retain")
    data = AuditData(forget=forget, retain=retain)
    plan = make_plan("quick", (ATTACK,), ("qa",), 0)
    config = AuditConfig(ModelSpec("o"), ModelSpec("u"), ModelSpec("r"), plan)
    known = {("original", NO_ATTACK): 1.0, ("unlearned", NO_ATTACK): 0.05, ("reference", NO_ATTACK): 0.05}
    known |= {("unlearned", ATTACK): known_after_attack, ("reference", ATTACK): 0.05}
    results = {
        ScoreKey(role, attack, None if attack == NO_ATTACK else 0, "qa"): probe_result(role, k, forget)
        for (role, attack), k in known.items()
    }
    attacked = AttackResult("quant-rtn", {"bits": 4}, "ok", "fp")
    collateral = {role: probe_result(role, 1.0, retain) for role in ("original", "unlearned")}
    attacks = {ATTACK: {"unlearned": [attacked], "reference": [attacked]}}
    fingerprints = {"original": "o", "unlearned": "u", "reference": "r"}
    scores = AuditScores(results, {}, attacks, fingerprints, True, collateral, data.subjects())
    return config, data, scores


@pytest.mark.parametrize("after_attack", [0.3, 0.5])
def test_a_non_default_policy_reaches_every_renderer(after_attack):
    """Residual 0.26 or 0.47 under quantization, judged with hidden = 0.4 and removed = 0.05: INCONCLUSIVE (exit 3)
    or HIDDEN (exit 1), and every renderer shows what the one decision said, thresholds included."""
    policy = Policy(thresholds=Thresholds(hidden=0.4, removed=0.05))
    config, data, scores = synthetic(after_attack)
    results = build_results(config, data, scores, policy, command="test", options={})
    validate_results(results)
    cell = next(c for c in results["cells"] if c["attack"] == ATTACK)
    verdict = results["verdict"]
    assert cell["thresholds"]["hidden"] == 0.4 and cell["n_subjects"] == SUBJECTS
    wide = "underpowered" if cell["zero_bound"] >= 0.05 else "unclear"
    expected = "recovered" if cell["ci_low"] > 0.4 else (wide if cell["ci_high"] >= 0.05 else "clean")
    assert cell["outcome"] == expected
    assert verdict["label"] == ("HIDDEN" if expected == "recovered" else "INCONCLUSIVE")
    assert verdict["exit_code"] == (1 if expected == "recovered" else 3)
    assert verdict["certified_bound"] == max(c["ci_high"] for c in results["cells"] if c["residual"] is not None)
    html, md, junit = render_html(results), render_markdown(results), render_junit(results)
    assert "HIDDEN when a cell's lower bound &gt; 0.40" in html and "REMOVED when every upper bound &lt; 0.05" in html
    assert f"Certified bound {verdict['certified_bound']:.2f}" in html
    assert f"**{verdict['label']}**" in md and f"(exit {verdict['exit_code']})" in md
    failures = int(re.search(r'<testsuites[^>]* failures="(\d+)"', junit).group(1))
    assert (failures > 0) == (verdict["label"] == "HIDDEN")


def test_core_preset_runs_every_probe_under_one_attack_of_each_family():
    """The demo's preset: fewer attacks than standard, never fewer kinds of evidence."""
    from auditor.engine.plan import DEMO_PRESET, PRESETS
    from auditor.registry import PROBES

    core, standard, thorough = PRESETS[DEMO_PRESET], PRESETS["standard"], PRESETS["thorough"]
    assert set(core["probes"]) == set(standard["probes"])
    assert set(thorough["probes"]) | set(thorough["choice_probes"]) == set(PROBES.names())  # thorough runs all
    assert set(PROBES.names()) - set(standard["probes"]) == {"mcq", "logit-lens"}  # choices only; its cost
    assert set(core["attacks"]) < set(standard["attacks"])
    families = {attack.split(":")[0].split("-")[0] for attack in core["attacks"]}
    assert families == {"quant", "relearn"} and {"relearn-forget", "relearn-retain"} <= set(core["attacks"])
