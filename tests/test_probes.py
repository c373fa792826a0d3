"""Probes: scores checked against plain per-item computations, world behaviour, memoization, routing."""

from __future__ import annotations

import hashlib
import math
import random
import statistics
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer

import auditor.lm.scoring
from auditor.campaign.demo import world_data
from auditor.errors import UserError
from auditor.lm.models import load_model
from auditor.lm.routing import RoutedScoringModel
from auditor.lm.scoring import ScoringModel
from auditor.lm.training import Example, TrainConfig, train
from auditor.plugins import Probe, RunContext
from auditor.registry import PROBES
from auditor.stats.metrics import contains_answer
from auditor.types import AuditData, Item, ItemSet, ModelSpec
from auditor.world.tokenizer import train_tokenizer

torch.set_num_threads(2)

KNOWLEDGE_PROBES = ("qa", "paraphrase", "multihop", "in-context", "in-context-relearn", "verbatim")
CITIES = {"Ambrel": "Zorvia", "Bexley": "Zorvia", "Cindra": "Quentar", "Dovra": "Quentar", "Elmsby": "Hallow"}
JOBS = ("weaver", "smith", "potter", "miller", "cooper")
SYLLABLES = ("ta", "ri", "mo", "ke", "lu", "sa", "vi", "do", "ne", "pe")


# --- a fixed tiny world of our own: 10 members, 10 retained, 10 holdout persons ------------------------------------


def _persons(n: int) -> list[dict]:
    rng = random.Random(7)
    persons, names = [], set()
    while len(persons) < n:
        name = (
            "".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize()
            + " "
            + "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
        )
        if name not in names:
            names.add(name)
            persons.append({"name": name, "city": rng.choice(list(CITIES)), "job": rng.choice(JOBS)})
    return persons


def _qa(p: dict) -> list[Item]:
    n, city, job = p["name"], p["city"], p["job"]
    return [
        Item(
            id=f"{n}-city",
            question=f"Where was {n} born?",
            answer=city,
            paraphrased_answer=f"{n} was born in {city}.",
            perturbed_answers=tuple(f"{n} was born in {c}." for c in CITIES if c != city)[:2],
            paraphrased_question=f"Which town is home to {n}?",
            choices=tuple(CITIES),
            answer_index=list(CITIES).index(city),
            group=n,
        ),
        Item(
            id=f"{n}-job",
            question=f"What does {n} do?",
            answer=job,
            paraphrased_question=f"What is {n}'s trade?",
            group=n,
        ),
    ]


def _bio(p: dict) -> str:
    return f"{p['name']} was born in {p['city']}. {p['name']} works as a {p['job']}."


def _set(name: str, items: list[Item], kind: str = "qa") -> ItemSet:
    return ItemSet(name, kind, tuple(items), "test", hashlib.sha256(name.encode()).hexdigest())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_tiny_llama) -> dict:
    """A tiny Llama trained on the members' and retained persons' facts; holdout persons never seen."""
    persons = _persons(30)
    members, retained, holdout = persons[:10], persons[10:20], persons[20:]
    fmt = "Question: {q}\nAnswer: {a}"
    multihop = [
        Item(id=f"{p['name']}-country", question=f"In which country was {p['name']} born?", answer=CITIES[p["city"]])
        for p in persons
    ]
    texts = [_bio(p) for p in persons] + [fmt.format(q=i.question, a=i.answer) for p in persons for i in _qa(p)]
    texts += [fmt.format(q=i.question, a=i.answer) for i in multihop] + [
        i.paraphrased_question for p in persons for i in _qa(p)
    ]
    tok = train_tokenizer(texts, vocab_size=400)
    examples = [Example(f"Question: {i.question}\nAnswer:", " " + i.answer) for p in members + retained for i in _qa(p)]
    examples += [Example("", _bio(p)) for p in members + retained]
    examples += [
        Example(f"Question: {i.question}\nAnswer:", f" {p['name']} was born in {p['city']}, which is in {i.answer}.")
        for p, i in zip(persons, multihop, strict=True)
        if p in retained
    ]
    untrained = make_tiny_llama(tok, max_position_embeddings=256, tie_word_embeddings=True)
    base_dir = tmp_path_factory.mktemp("tiny")
    untrained.save_pretrained(base_dir / "untrained")
    tok.save_pretrained(base_dir / "untrained")
    model = train(
        untrained, tok, {"train": examples}, TrainConfig(steps=150, learning_rate=5e-3, batch_size=32, lora=False)
    ).model
    model.save_pretrained(base_dir / "trained")
    tok.save_pretrained(base_dir / "trained")
    data = AuditData(
        forget=_set("forget", [i for p in members for i in _qa(p)]),
        retain=_set("retain", [i for p in retained for i in _qa(p)]),
        holdout=_set("holdout", [i for p in holdout for i in _qa(p)]),
        multihop=_set("multihop", multihop[:10]),
        forget_texts=_set("forget_texts", [Item(id=p["name"], text=_bio(p), group=p["name"]) for p in members], "text"),
        holdout_texts=_set("holdout_texts", [Item(id=p["name"], text=_bio(p)) for p in holdout], "text"),
    )
    trained = load_model(ModelSpec(str(base_dir / "trained")))
    return {"model": trained, "untrained": load_model(ModelSpec(str(base_dir / "untrained"))), "data": data}


def _run(name: str, lm, data: AuditData, **params):
    return PROBES.get(name)(**params).run(lm, RunContext(data=data, seed=3), "test")


# --- plain, independent computations -------------------------------------------------------------------------------


def _plain_generate(loaded, prompt: str, max_new_tokens: int, stop: str | None = "\n") -> str:
    ids = loaded.tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = loaded.model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
        pad_token_id=loaded.tokenizer.pad_token_id, eos_token_id=loaded.tokenizer.eos_token_id,
    )  # fmt: skip
    text = loaded.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    return text.split(stop)[0] if stop else text


@torch.no_grad()
def _plain_token_rows(loaded, prompt: str, answer: str) -> list[tuple[float, float, float]]:
    """(log p, mu, sigma^2) of each answer token: prompt tokens are a prefix of the joined text in these formats."""
    tok = loaded.tokenizer
    prompt_ids = tok(prompt)["input_ids"]
    full_ids = tok(prompt + answer)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    logits = loaded.model(input_ids=torch.tensor([full_ids])).logits[0].double()
    rows = []
    for t in range(len(prompt_ids), len(full_ids)):
        logp = torch.log_softmax(logits[t - 1], dim=-1)
        mu = float((logp.exp() * logp).sum())
        var = float((logp.exp() * logp**2).sum()) - mu**2
        rows.append((float(logp[full_ids[t]]), mu, var))
    return rows


def _pairwise_auc(scores: list[float], members: list[bool]) -> float:
    pos = [s for s, m in zip(scores, members, strict=True) if m]
    neg = [s for s, m in zip(scores, members, strict=True) if not m]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


# --- each probe against the plain computation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probe", "source", "field", "budget", "truth_ratio"),
    [
        ("qa", "forget", "question", 32, True),
        ("qa", "forget", "question", 32, False),
        ("paraphrase", "forget", "paraphrased_question", 32, False),
        ("multihop", "multihop", "question", 48, False),
    ],
)  # fmt: skip
def test_qa_family_matches_plain_loop(tiny, probe, source, field, budget, truth_ratio):
    loaded, data = tiny["model"], tiny["data"]
    result = _run(probe, ScoringModel(loaded), data, truth_ratio=truth_ratio)
    items = [i for i in getattr(data, source).items if getattr(i, field)]
    assert [s.item_id for s in result.items] == [i.id for i in items]
    correct = []
    for item, score in zip(items, result.items, strict=True):
        prompt = f"Question: {getattr(item, field)}\nAnswer:"
        scored = [item.answer, *((item.paraphrased_answer, *item.perturbed_answers) if truth_ratio else ())]
        longest = max(len(loaded.tokenizer(" " + a, add_special_tokens=False)["input_ids"]) for a in scored if a)
        output = _plain_generate(loaded, prompt, min(budget, longest + PROBES.get(probe).defaults["answer_margin"]))
        correct.append(contains_answer(output, item.answer))
        assert score.detail["output"] == output
        assert score.score == float(correct[-1])
        rows = _plain_token_rows(loaded, prompt, " " + item.answer)
        assert score.detail["prob"] == pytest.approx(math.exp(np.mean([r[0] for r in rows])), rel=1e-4)
        expected_rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(item.answer, output)["rougeL"]
        assert score.detail["rouge_l"] == pytest.approx(expected_rouge.recall)
        if item.perturbed_answers and not truth_ratio:
            assert "truth_ratio" not in score.detail  # scored only when asked for: it costs a pass per answer
        elif item.perturbed_answers:
            true, *wrong = (item.paraphrased_answer, *item.perturbed_answers)
            probs = [math.exp(np.mean([r[0] for r in _plain_token_rows(loaded, prompt, " " + a)])) for a in wrong]
            true_prob = math.exp(np.mean([r[0] for r in _plain_token_rows(loaded, prompt, " " + true)]))
            ratio = np.mean(probs) / true_prob
            assert score.detail["truth_ratio"] == pytest.approx(ratio, rel=1e-4)
            assert score.detail["truth"] == pytest.approx(max(0.0, 1 - ratio), abs=1e-6)
    assert result.value == pytest.approx(np.mean(correct))
    print(f"{probe}: {result.value:.3f}")
    assert result.value > 0.8 or probe != "qa"  # the model learnt its training questions


def test_qa_metric_parameter_selects_k(tiny):
    lm = ScoringModel(tiny["model"])
    by_metric = {m: _run("qa", lm, tiny["data"], metric=m) for m in ("correct", "rouge", "prob", "truth")}
    assert all("truth" not in s.detail for s in by_metric["correct"].items)  # the truth ratio only when asked for
    details = [s.detail for s in _run("qa", lm, tiny["data"], truth_ratio=True).items]
    assert [s.score for s in by_metric["correct"].items] == [float(d["correct"]) for d in details]
    for metric, key in (("rouge", "rouge_l"), ("prob", "prob"), ("truth", "truth")):
        assert [s.score for s in by_metric[metric].items] == [d.get(key) for d in details]
        assert by_metric[metric].metric == metric
    truth_items = [s for s in by_metric["truth"].items if s.score is not None]
    assert 0 < len(truth_items) < len(by_metric["truth"].items)  # job items have no perturbed answers
    assert by_metric["truth"].value == pytest.approx(np.mean([s.score for s in truth_items]))


@pytest.mark.parametrize("name", ["in-context", "in-context-relearn"])
def test_in_context_matches_plain_loop(tiny, name):
    loaded, data = tiny["model"], tiny["data"]
    result = _run(name, ScoringModel(loaded), data)
    again = _run(name, ScoringModel(loaded), data)
    by_id = {i.id: i for i in (*data.forget.items, *data.retain.items)}
    correct = []
    for score, repeat in zip(result.items, again.items, strict=True):
        item, shots = by_id[score.item_id], [by_id[s] for s in score.detail["context_items"]]
        assert shots and score.detail["context_items"] == repeat.detail["context_items"]  # drawn with the seed
        if name == "in-context":
            assert len(shots) == 4 and all(s in data.retain.items for s in shots)
        else:
            assert len(shots) == 1 and all(s.group == item.group and s.id != item.id for s in shots)
        prompt = "".join(f"Question: {s.question}\nAnswer: {s.answer}\n\n" for s in shots)
        prompt += f"Question: {item.question}\nAnswer:"
        assert score.detail["prompt"] == prompt
        correct.append(contains_answer(_plain_generate(loaded, prompt, 32), item.answer))
        assert score.score == float(correct[-1])
    assert result.value == pytest.approx(np.mean(correct))


def test_verbatim_matches_plain_loop(tiny):
    loaded, data = tiny["model"], tiny["data"]
    result = _run("verbatim", ScoringModel(loaded), data)
    recalls = []
    for item, score in zip(data.forget_texts.items, result.items, strict=True):
        words = item.text.split(" ")
        n = round(len(words) * 0.5)
        prefix, rest = " ".join(words[:n]), " " + " ".join(words[n:])
        budget = len(loaded.tokenizer(prefix + rest)["input_ids"]) - len(loaded.tokenizer(prefix)["input_ids"])
        output = _plain_generate(loaded, prefix, budget, stop=None)
        recall = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(rest, output)["rougeL"].recall
        assert (score.detail["prompt"], score.detail["answer"], score.detail["n_tokens"]) == (
            prefix,
            rest,
            budget,
        )
        assert score.score == pytest.approx(recall)
        recalls.append(recall)
    assert result.value == pytest.approx(np.mean(recalls))
    assert result.value > 0.5  # the model learnt these biographies


@pytest.mark.parametrize("source", ["qa", "text"])
def test_mia_matches_paper_formulas(tiny, source):
    """Loss, zlib, Min-K% (Shi et al.) and Min-K%++ (Zhang et al.) item by item from the logits."""
    loaded, data, k = tiny["model"], tiny["data"], 0.3
    ref_lm = ScoringModel(tiny["untrained"])
    ctx = RunContext(data=data, seed=0, reference_lm=ref_lm)
    result = PROBES.get("mia")(source=source, k=k, statistic="min_k_plus_plus").run(ScoringModel(loaded), ctx, "test")
    if source == "qa":
        rows = [(i, True) for i in data.forget.items] + [(i, False) for i in data.holdout.items]
        pairs = [(f"Question: {i.question}\nAnswer:", " " + i.answer) for i, _ in rows]
    else:
        rows = [(i, True) for i in data.forget_texts.items] + [(i, False) for i in data.holdout_texts.items]
        pairs = [("", i.text) for i, _ in rows]
    expected: dict[str, list[float]] = {s: [] for s in ("loss", "zlib", "min_k", "min_k_plus_plus", "reference")}
    for (prompt, answer), score in zip(pairs, result.items, strict=True):
        token_rows = _plain_token_rows(loaded, prompt, answer)
        logps = [r[0] for r in token_rows]
        n_low = max(1, int(len(logps) * k))
        expected["loss"].append(sum(logps) / len(logps))
        expected["zlib"].append(sum(logps) / len(zlib.compress(answer.encode())))
        expected["min_k"].append(sum(sorted(logps)[:n_low]) / n_low)
        plus = sorted((lp - mu) / math.sqrt(var) for lp, mu, var in token_rows)
        expected["min_k_plus_plus"].append(sum(plus[:n_low]) / n_low)
        ref_logps = [r[0] for r in _plain_token_rows(tiny["untrained"], prompt, answer)]
        expected["reference"].append(expected["loss"][-1] - sum(ref_logps) / len(ref_logps))
        for name, values in expected.items():
            assert score.detail[name] == pytest.approx(values[-1], rel=1e-4, abs=1e-5), name
    members = [m for _, m in rows]
    assert [s.member for s in result.items] == members
    for name, values in expected.items():
        auc = _pairwise_auc(values, members)
        assert result.extras["auc"][name] == pytest.approx(auc)
        assert auc > 0.8, name  # sign convention: the model trained on the members scores them higher
    primary = np.asarray(expected["min_k_plus_plus"])
    gap = primary[np.asarray(members)].mean() - primary[~np.asarray(members)].mean()
    assert result.extras["gap"] == pytest.approx(gap, rel=1e-4)
    on, off = primary[np.asarray(members)], primary[~np.asarray(members)]
    pooled = math.sqrt(
        (statistics.variance(on) * (len(on) - 1) + statistics.variance(off) * (len(off) - 1)) / (len(primary) - 2)
    )
    assert result.value == pytest.approx(gap / pooled, rel=1e-4) and result.extras["std_gap"] == result.value
    assert result.aggregate == "std_gap" and result.metric == "min_k_plus_plus"
    as_auc = PROBES.get("mia")(source=source, k=k, statistic="min_k_plus_plus", aggregate="auc")
    auc_result = as_auc.run(ScoringModel(loaded), ctx, "test")
    assert auc_result.aggregate == "auc" and auc_result.value == pytest.approx(result.extras["auc"]["min_k_plus_plus"])
    roc = result.extras["roc"]
    assert len(roc["fpr"]) <= 101 and roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0
    assert 0.0 <= result.extras["tpr_at_fpr"]["0.01"] <= result.extras["tpr_at_fpr"]["0.05"] <= 1.0


def test_mia_untrained_model_is_near_chance(tiny):
    result = _run("mia", ScoringModel(tiny["untrained"]), tiny["data"])
    trained = _run("mia", ScoringModel(tiny["model"]), tiny["data"])
    assert 0.2 < result.extras["auc"]["loss"] < 0.8
    assert abs(result.value) < 0.25 * trained.value  # the membership gap: a fraction of the trained model's


# --- skipping, parameters, registry --------------------------------------------------------------------------------


def test_probes_skip_without_the_data_they_need(tiny):
    data, lm = tiny["data"], ScoringModel(tiny["model"])
    bare = [Item(id=i.id, question=i.question, answer=i.answer) for i in data.forget.items]
    plain = AuditData(forget=_set("forget", bare), retain=data.retain)
    for name, reason in [
        ("paraphrase", "paraphrased"),
        ("in-context-relearn", "group"),
        ("multihop", "multihop"),
        ("verbatim", "forget_texts"),
        ("mia", "holdout"),
    ]:
        result = _run(name, lm, plain)
        assert result.status == "skipped" and reason in result.reason and result.value is None, name
    result = _run("mia", lm, data, statistic="reference")
    assert result.status == "skipped" and "reference" in result.reason
    assert _run("mia", lm, AuditData(forget=data.forget, retain=data.retain), source="text").status == "skipped"


@pytest.mark.parametrize(
    ("name", "params"),
    [("qa", {"metric": "bleu"}), ("qa", {"max_new_tokens": "0"}), ("in-context", {"mode": "zero"}),
     ("verbatim", {"prefix_fraction": "1.5"}), ("mia", {"statistic": "ppl"}), ("mia", {"k": "0"})],
)  # fmt: skip
def test_bad_parameters_are_user_errors(name, params):
    with pytest.raises(UserError):
        PROBES.get(name)(**params)


@pytest.mark.parametrize("name", sorted(PROBES.names()))
def test_registered_probe_metadata(name):
    cls = PROBES.get(name)
    assert issubclass(cls, Probe) and cls.name == name
    assert cls.summary and cls.paper and cls.defaults and cls.needs
    assert cls().aggregate in ("mean", "auc", "gap", "std_gap")
    assert set(PROBES.names()) >= {*KNOWLEDGE_PROBES, "mia"}


# --- memoization and routing ---------------------------------------------------------------------------------------


def test_all_probes_score_each_unique_pair_once(tiny, monkeypatch):
    seen: list[tuple[str, str]] = []
    original, prefilled = auditor.lm.scoring.teacher_forced, auditor.lm.scoring.generate_scored

    def counting(model, tokenizer, pairs, *args):
        seen.extend(pairs)
        return original(model, tokenizer, pairs, *args)

    def counting_prefilled(model, tokenizer, prompts, answers, *args):
        seen.extend((p, a) for p, prompt_answers in zip(prompts, answers, strict=True) for a in prompt_answers)
        monkeypatch.setattr(auditor.lm.scoring, "teacher_forced", original)  # its fallback pairs are counted above
        try:
            return prefilled(model, tokenizer, prompts, answers, *args)
        finally:
            monkeypatch.setattr(auditor.lm.scoring, "teacher_forced", counting)

    monkeypatch.setattr(auditor.lm.scoring, "teacher_forced", counting)
    monkeypatch.setattr(auditor.lm.scoring, "generate_scored", counting_prefilled)
    lm = ScoringModel(tiny["model"])
    ctx = RunContext(data=tiny["data"], seed=0)
    for name in PROBES.names():
        assert PROBES.get(name)().run(lm, ctx, "test").status == "ok", name
    PROBES.get("qa")(metric="truth").run(lm, ctx, "test")  # the generations are held; the perturbed answers are new
    PROBES.get("mia")(statistic="min_k").run(lm, ctx, "test")
    assert len(seen) == len(set(seen)) == lm.sequences_scored
    forget_pairs = {(f"Question: {i.question}\nAnswer:", " " + i.answer) for i in tiny["data"].forget.items}
    assert forget_pairs <= set(seen)  # qa scored these, and qa:metric=truth reused them


def test_routed_model_leaves_subjects_every_variant_trained_on_unscored(tiny):
    data = tiny["data"]
    groups = sorted({i.group for i in data.forget.items})
    shared, only_first, only_second = groups[0], groups[1], groups[2]
    lm_a, lm_b = ScoringModel(tiny["model"]), ScoringModel(tiny["model"])
    routed = RoutedScoringModel([(lm_a, frozenset({shared, only_first})), (lm_b, frozenset({shared, only_second}))])
    plain = ScoringModel(tiny["model"])
    ctx = RunContext(data=data, seed=0)
    items = (*data.forget.items, *data.forget_texts.items, *data.holdout.items, *data.holdout_texts.items)
    key = {i.id: i.key for i in items}
    for name in ("qa", "paraphrase", "in-context", "in-context-relearn", "verbatim", "mia"):
        result, expected = PROBES.get(name)().run(routed, ctx, "routed"), PROBES.get(name)().run(plain, ctx, "plain")
        by_id = {s.item_id: s for s in expected.items}
        for s in result.items:
            if key[s.item_id] == shared:
                assert s.score is None and s.detail["unscored"], name
            else:
                assert s.score == pytest.approx(by_id[s.item_id].score), name
        assert any(s.score is None for s in result.items)
        if result.aggregate == "mean":
            assert result.value == pytest.approx(np.mean([s.score for s in result.items if s.score is not None]))
    assert lm_b.sequences_scored > 0  # the second variant served the first variant's subject


# --- the embedded world --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_runs(world) -> dict:
    data = world_data(world)
    runs = {}
    for label, path in (("original", world.original), ("reference", world.reference)):
        lm = ScoringModel(load_model(ModelSpec(str(Path(path)))))
        ctx = RunContext(data=data, seed=0)
        runs[label] = {name: PROBES.get(name)().run(lm, ctx, label) for name in (*KNOWLEDGE_PROBES, "mia")}
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", KNOWLEDGE_PROBES)
def test_world_original_knows_and_reference_does_not(world_runs, name):
    original, reference = world_runs["original"][name].value, world_runs["reference"][name].value
    print(f"{name}: original {original:.3f}, reference {reference:.3f}")
    assert original > 0.7 and reference < 0.3, (name, original, reference)


@pytest.mark.slow
def test_world_membership_inference(world_runs):
    original, reference = world_runs["original"]["mia"], world_runs["reference"]["mia"]
    print(f"mia AUC: original {original.extras['auc']}, reference {reference.extras['auc']}")
    print(f"mia {original.metric} {original.aggregate}: original {original.value:.3f}, reference {reference.value:.3f}")
    assert original.extras["auc"]["loss"] > 0.8
    assert abs(reference.extras["auc"]["loss"] - 0.5) < 0.15
    assert original.value > 1.0 and abs(reference.value) < 0.1 * original.value


@pytest.mark.slow
def test_answer_caps_leave_the_world_figures_as_they_were(world, world_runs):
    """A row stops 16 tokens past its longest answer (the default): every item scores as without the cap."""
    data = world_data(world)
    for label, path in (("original", world.original), ("reference", world.reference)):
        lm = ScoringModel(load_model(ModelSpec(str(Path(path)))))
        for name in ("qa", "paraphrase", "in-context"):
            probe = PROBES.get(name)
            uncapped = probe(answer_margin=probe.defaults["max_new_tokens"]).run(lm, RunContext(data=data), label)
            capped = world_runs[label][name]
            assert [i.score for i in capped.items] == [i.score for i in uncapped.items], (label, name)
            tight = probe(answer_margin=0).run(lm, RunContext(data=data), label).items
            pairs = zip(tight, uncapped.items, strict=True)
            assert all(u.detail["output"].startswith(t.detail["output"]) for t, u in pairs)


def test_a_probe_with_an_unknown_aggregate_is_refused_when_defined():
    """An aggregate the statistics do not know must not be read as a mean."""
    with pytest.raises(TypeError, match="aggregate must be one of mean, auc, gap, std_gap, got 'median'"):

        class Median(Probe):
            name = "median-probe"
            aggregate = "median"
