"""The adaptive adversary: search plans within a budget, cross-fitted selection, and the self-check."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.quantization import QuantRTN
from auditor.engine.adaptive import cross_fit, stitched, subject_halves
from auditor.engine.plan import Plan, PlannedAttack, Search, make_plan, parse_attack, parse_probe, plan_search
from auditor.engine.records import AuditScores, ScoreKey
from auditor.errors import UserError
from auditor.types import NO_ATTACK, AuditData, Item, ItemScore, ItemSet, ProbeResult


def test_a_search_tries_the_planned_configuration_then_the_cheapest_within_its_budget():
    planned = parse_attack("relearn-forget:lora_rank=4")
    search = plan_search(planned, 2.0)
    assert search is not None and search.id == "relearn-forget:lora_rank=4~adaptive"
    assert search.configs[0] is planned and search.costs[0] == 1.0
    assert list(search.costs[1:]) == sorted(search.costs[1:]) and sum(search.costs) <= 2.0
    # an entry changes the planned configuration's own parameters and keeps the others
    assert all(c.attack.params["lora_rank"] == 4 for c in search.configs)
    unbounded = plan_search(planned, 99.0)
    assert search.left_out and len(unbounded.configs) == len(search.configs) + len(search.left_out)
    assert not unbounded.left_out


def test_a_fixed_budget_plans_no_search_and_presets_set_theirs():
    assert make_plan("core", (), (), 0).searches == ()
    adaptive = make_plan("adaptive", (), (), 0)
    assert adaptive.budget == 4.0 and {s.family for s in adaptive.searches} == {"quantization", "relearning"}
    core_searched = make_plan("core", (), (), 0, budget=4.0)
    assert [s.planned.id for s in core_searched.searches] == [p.id for p in core_searched.attacks]
    ids = [c.id for c in core_searched.configurations()]
    assert len(ids) == len(set(ids)) and ids[: len(core_searched.attacks)] == [p.id for p in core_searched.attacks]
    with pytest.raises(UserError, match="at least 1"):
        make_plan("core", (), (), 0, budget=0.5)


def test_a_search_entry_of_another_family_is_refused(monkeypatch):
    monkeypatch.setattr(QuantRTN, "search_space", ("relearn-forget:steps=5",))
    with pytest.raises(ValueError, match="not of the quantization family"):
        plan_search(parse_attack("quant-rtn"), 4.0)


def _result(model: str, scores: dict[str, float]) -> ProbeResult:
    items = tuple(ItemScore(i, float(s)) for i, s in scores.items())
    return ProbeResult("qa", model, "correct", "mean", float(np.mean(list(scores.values()))), items)


def test_cross_fitting_removes_the_winners_curse():
    """20 configurations that bring back nothing: the unlearned model and the reference know the same under each
    (independent draws of one distribution). Taking the best configuration on the items it is scored on biases
    the residual upward; choosing it on one half of the subjects and scoring the other half does not."""
    n, configs, repeats = 200, [PlannedAttack(f"c{i}", QuantRTN()) for i in range(20)], 150
    search = Search("c0~adaptive", configs[0], tuple(configs), (1.0,) * len(configs), 20.0)
    plan = Plan((configs[0],), (parse_probe("qa"),), (0,), (search,), 20.0)
    ids = [f"i{k}" for k in range(n)]
    items = tuple(Item(id=i, question="q", answer="a", group=f"s{k // 2}") for k, i in enumerate(ids))
    data = AuditData(ItemSet("forget", "qa", items, "m", "f"), ItemSet("retain", "qa", items[:1], "m", "r"))
    halves = subject_halves(data, seed=0)
    rng = np.random.default_rng(0)
    in_sample, crossed = [], []
    for _ in range(repeats):
        res = {
            ("original", NO_ATTACK, None, "qa"): _result("o", dict.fromkeys(ids, 1.0)),
            ("reference", NO_ATTACK, None, "qa"): _result("r", dict(zip(ids, rng.random(n) < 0.2, strict=True))),
        }
        for role in ("unlearned", "reference"):
            for config in configs:
                res[(role, config.id, 0, "qa")] = _result(role, dict(zip(ids, rng.random(n) < 0.2, strict=True)))
        gap = 1.0 - res[("reference", NO_ATTACK, None, "qa")].value
        best = max(configs, key=lambda c: res[("unlearned", c.id, 0, "qa")].value)
        in_sample.append(
            (res[("unlearned", best.id, 0, "qa")].value - res[("reference", best.id, 0, "qa")].value) / gap
        )
        scores = AuditScores(res, {}, {}, {}, True, {}, {})
        cross_fit(search, plan, scores, halves, lambda _config, _probe: True)
        u, r = res[ScoreKey("unlearned", search.id, 0, "qa")], res[ScoreKey("reference", search.id, 0, "qa")]
        assert sorted(s.item_id for s in u.items) == sorted(ids)  # every item scored once
        crossed.append((u.value - r.value) / gap)
    spread = np.std(crossed) / np.sqrt(repeats)
    print(f"in-sample maximum {np.mean(in_sample):.4f}, cross-fitted {np.mean(crossed):.4f} +- {spread:.4f}")
    assert np.mean(in_sample) > 0.04  # the maximum of 20 noisy scores, taken in sample
    assert abs(np.mean(crossed)) < 3 * spread + 0.005, (np.mean(crossed), spread)


def test_stitching_takes_each_half_from_the_choice_of_the_other():
    halves = {"a": 0, "b": 1}
    chosen_on_0 = _result("x", {"a": 0.0, "b": 1.0})  # scores half 1
    chosen_on_1 = _result("y", {"a": 0.5, "b": 0.0})  # scores half 0
    joined = stitched({0: chosen_on_0, 1: chosen_on_1}, halves, "joined")
    assert {s.item_id: s.score for s in joined.items} == {"a": 0.5, "b": 1.0} and joined.value == 0.75


def test_halves_keep_subjects_together_and_balance_both_sides():
    forget = tuple(Item(id=f"f{k}", question="q", answer="a", group=f"p{k % 10}") for k in range(40))
    holdout = tuple(Item(id=f"h{k}", question="q", answer="a", group=f"h{k % 6}") for k in range(12))
    data = AuditData(
        ItemSet("forget", "qa", forget, "m", "f"),
        ItemSet("retain", "qa", forget[:1], "m", "r"),
        holdout=ItemSet("holdout", "qa", holdout, "m", "h"),
    )
    halves = subject_halves(data, seed=3)
    for items in (forget, holdout):
        by_subject: dict[str, set[int]] = {}
        for item in items:
            by_subject.setdefault(item.group, set()).add(halves[item.id])
        assert all(len(h) == 1 for h in by_subject.values())
        counts = [sum(next(iter(v)) == half for v in by_subject.values()) for half in (0, 1)]
        assert counts[0] == counts[1]
    assert subject_halves(data, seed=3) == halves and subject_halves(data, seed=4) != halves


@pytest.fixture(scope="module")
def fragile(tmp_path_factory, make_tiny_llama):
    """A real-shaped case: a tiny model that knows 48 capitals as it states them ("The capital of X is Y."),
    audited on bare answers ("Y"). Like SmolLM2-135M-Instruct, a fine-tune on some bare answers teaches it to
    answer bare, and it then answers the held-out questions with its training fold's cities."""
    from auditor.campaign.unlearn_runner import unlearn_to_dir
    from auditor.lm.models import load_model
    from auditor.lm.prompts import DEFAULT_FORMAT
    from auditor.lm.training import Example, TrainConfig, train
    from auditor.plugins import RunContext
    from auditor.registry import METHODS
    from auditor.types import ModelSpec
    from auditor.world.tokenizer import train_tokenizer

    rng = np.random.default_rng(0)
    syllables = ["ka", "lo", "mi", "ta", "ren", "vo", "shi", "dar", "pel", "qu", "ban", "tor", "li", "ze", "mo", "fa"]
    names = sorted({"".join(rng.choice(syllables, 2)).capitalize() for _ in range(400)})[:72]
    cities = ["".join(rng.choice(syllables, 2)).capitalize() + "o" for _ in names]
    items = [
        Item(id=f"c{i}", question=f"What is the capital of {n}?", answer=c)
        for i, (n, c) in enumerate(zip(names, cities, strict=True))
    ]
    sentence = {item.id: f"The capital of {item.question[23:-1]} is {item.answer}." for item in items}
    fmt = DEFAULT_FORMAT
    tokenizer = train_tokenizer([fmt.prompt(i.question) + fmt.completion(sentence[i.id]) for i in items] * 3, 400)
    model = make_tiny_llama(tokenizer, max_position_embeddings=64, tie_word_embeddings=True)
    known = items[:48]  # trained; the other 24 are the holdout: capitals it does not know (the floor)
    examples = [Example(fmt.prompt(i.question), fmt.completion(sentence[i.id])) for i in known]
    trained = train(model, tokenizer, {"train": examples}, TrainConfig(steps=300, learning_rate=3e-3, lora=False))
    root = tmp_path_factory.mktemp("fragile")
    trained.model.save_pretrained(root / "original", safe_serialization=True)
    tokenizer.save_pretrained(root / "original")
    sets = {"forget": known[:24], "retain": known[24:], "holdout": items[48:]}
    data = AuditData(
        *(ItemSet(name, "qa", tuple(sets[name]), "memory", name) for name in ("forget", "retain")),
        holdout=ItemSet("holdout", "qa", tuple(sets["holdout"]), "memory", "holdout"),
    )
    original = load_model(ModelSpec(str(root / "original"), dtype="float32", device="cpu"))
    ctx = RunContext(data=data)
    unlearn_to_dir(METHODS.get("idk")(), original, data.forget, data.retain, root / "idk", ctx)
    return root, data


# 53 passes over a training fold of 12 capitals, 40 steps of 16 (the fixed default before budgets were passes):
# the real model's case, where the fine-tune teaches the training fold's answers.
OVERFITTING = "relearn-forget:epochs=53"


def audit_fragile(root, data, unlearned: str, out, budget: float = 1.0):
    from auditor.engine.audit import run_audit
    from auditor.engine.records import AuditConfig
    from auditor.stats.policy import Policy
    from auditor.types import ModelSpec

    attacks = ("quant-rtn:bits=4", OVERFITTING)
    plan = make_plan("quick", attacks, ("qa", "mia"), 0, budget=budget, data=data)
    config = AuditConfig(ModelSpec(str(root / "original")), ModelSpec(str(root / unlearned)), None, plan)
    return run_audit(config, data, Policy(), out, command="test", options={}).results


@pytest.mark.slow
def test_a_destructive_relearning_is_reported_and_never_counts(fragile, tmp_path):
    """The model audited against itself: a relearning that overfits its fold (40 steps at 1e-3 on 12 capitals,
    the fixed default before budgets were passes) takes its held-out capitals away; the self-check says so and
    its cells count for nothing. A refusal that hides the capitals is then INCONCLUSIVE, never REMOVED, and the
    verdict names relearning as the family missing."""
    root, data = fragile
    itself = audit_fragile(root, data, "original", tmp_path / "self")
    cells = {(c["attack"], c["probe"]): c for c in itself["cells"]}
    relearned = cells[(OVERFITTING, "qa")]
    assert relearned["self_check"] < 0.5 and relearned["outcome"] == "self-check failed", relearned
    assert cells[("quant-rtn:bits=4", "qa")]["outcome"] != "self-check failed"
    hidden = audit_fragile(root, data, "idk", tmp_path / "idk")
    assert cells_outcome(hidden, OVERFITTING, "qa") == "self-check failed"
    assert hidden["verdict"]["label"] == "INCONCLUSIVE", hidden["verdict"]
    assert any("relearning" in reason for reason in hidden["verdict"]["reasons"]), hidden["verdict"]


def cells_outcome(results: dict, attack: str, probe: str) -> str:
    return next(c["outcome"] for c in results["cells"] if (c["attack"], c["probe"]) == (attack, probe))


@pytest.mark.slow
def test_the_search_keeps_only_configurations_that_keep_what_the_original_knew(fragile, tmp_path):
    """With a budget, the gentler relearning configurations pass the self-check and the destructive planned one is
    left out of the choice on the probe it fails."""
    root, data = fragile
    results = audit_fragile(root, data, "idk", tmp_path / "idk", budget=2.0)
    search = next(s for s in results["searches"] if s["family"] == "relearning")
    checks = {c["id"]: c["self_check"]["qa"] for c in search["configurations"]}
    eligible = search["probes"]["qa"]["eligible"]
    assert OVERFITTING not in eligible and eligible, checks
    assert all(abs(checks[c] - 1) <= 0.1 for c in eligible)
    assert results["verdict"]["label"] in ("INCONCLUSIVE", "HIDDEN"), results["verdict"]
