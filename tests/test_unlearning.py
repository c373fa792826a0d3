"""Bundled unlearning methods: losses against hand computations, pure operations, and controls on the world."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaForCausalLM

from auditor.errors import UserError
from auditor.lm.knowledge import qa_accuracy
from auditor.lm.losses import bounded_nll
from auditor.lm.models import LoadedModel, ModelSpec, clone, fingerprint_dir, fingerprint_module, load_model
from auditor.lm.quant import quantizable_linears, rtn_copy, rtn_quantize_dequantize
from auditor.lm.rollback import BackOff
from auditor.lm.scoring import ScoringModel
from auditor.lm.training import Batch, Example, TrainConfig, train
from auditor.plugins import RunContext, UnlearningMethod
from auditor.registry import METHODS
from auditor.types import AuditData, Item, ItemSet
from auditor.unlearning.base import ga_term, kl_to_reference
from auditor.unlearning.ext_sub import deficiency_part, extsub_rows
from auditor.unlearning.goal import ForgetGoal
from auditor.unlearning.grad_ascent import ga_kl_loss, graddiff_loss
from auditor.unlearning.imagine import imagination_targets
from auditor.unlearning.npo import npo_loss, npo_term
from auditor.unlearning.pruning import find_targets, pick_neurons, zero_neurons
from auditor.unlearning.relabel import adversarial_targets, draw_random_answers
from auditor.world.tokenizer import train_tokenizer

torch.set_num_threads(2)

# --------------------------------------------------------------------------- tiny model and data


def _items(prefix: str, names: list[str], cities: list[str]) -> ItemSet:
    items = tuple(
        Item(id=f"{prefix}{i}", question=f"Where was {n} born?", answer=c, group=n, relation="birth_city")
        for i, (n, c) in enumerate(zip(names, cities, strict=True))
    )
    return ItemSet(prefix, "qa", items, "memory", prefix)


@pytest.fixture(scope="module")
def tiny(make_tiny_llama):
    """A random tiny Llama, its tokenizer, and small forget/retain sets."""
    forget = _items("forget", ["Ann Lee", "Bob Ray", "Cid Fox"], ["Paris", "Rome", "Oslo"])
    retain = _items("retain", ["Dee Orr", "Eve Kay", "Fay Ng", "Gus Bo"], ["Lima", "Rome", "Paris", "Oslo"])
    texts = [f"Question: {it.question}\nAnswer: {it.answer}" for s in (forget, retain) for it in s.items]
    tokenizer = train_tokenizer([*texts, "I don't know"] * 3, 320)
    model = make_tiny_llama(
        tokenizer, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=64,
    ).eval()  # fmt: skip
    loaded = LoadedModel(model, tokenizer, "tiny", ModelSpec("tiny-in-memory"))
    return loaded, forget, retain, RunContext(AuditData(forget, retain))


def _batch(rows: list[list[int]], labelled: list[list[int]]) -> Batch:
    """A right-padded batch; ``labelled`` lists the labelled positions of each row."""
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    attention = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        for pos in labelled[i]:
            labels[i, pos] = row[pos]
    return Batch(ids, attention, labels)


@pytest.fixture(scope="module")
def batches():
    forget = _batch([[1, 5, 7, 9, 11], [1, 6, 8]], [[3, 4], [2]])
    retain = _batch([[1, 12, 13, 14], [1, 15, 16, 17, 18, 19]], [[2, 3], [4, 5]])
    return forget, retain


def _hand_logprobs(model, batch: Batch) -> list[float]:
    """log p(label) of every labelled position, one sequence at a time, by an explicit softmax."""
    out = []
    with torch.no_grad():
        for row in range(batch.input_ids.size(0)):
            n = int(batch.attention_mask[row].sum())
            logits = model(input_ids=batch.input_ids[row : row + 1, :n]).logits[0].double()
            for pos in range(1, n):
                label = int(batch.labels[row, pos])
                if label != -100:
                    z = logits[pos - 1]
                    out.append(float(z[label] - torch.log(torch.exp(z - z.max()).sum()) - z.max()))
    return out


def _hand_dists(model, batch: Batch) -> list[torch.Tensor]:
    """The next-token distribution at every labelled position (one sequence at a time)."""
    out = []
    with torch.no_grad():
        for row in range(batch.input_ids.size(0)):
            n = int(batch.attention_mask[row].sum())
            logits = model(input_ids=batch.input_ids[row : row + 1, :n]).logits[0].double()
            for pos in range(1, n):
                if int(batch.labels[row, pos]) != -100:
                    e = torch.exp(logits[pos - 1] - logits[pos - 1].max())
                    out.append(e / e.sum())
    return out


# --------------------------------------------------------------------------- losses by hand


def test_ga_and_graddiff_match_hand_computation(tiny, batches):
    model = tiny[0].model
    forget, retain = batches
    f_lp, r_lp = _hand_logprobs(model, forget), _hand_logprobs(model, retain)
    nll_f, nll_r = -sum(f_lp) / len(f_lp), -sum(r_lp) / len(r_lp)
    chance = math.log(model.config.vocab_size)
    ascent_f, ascent_r = (sum(min(-lp, chance) for lp in lps) / len(lps) for lps in (f_lp, r_lp))
    assert ascent_f + ascent_r < nll_f + nll_r  # this untrained model puts some tokens below chance: the bound shows
    with torch.no_grad():
        assert float(ga_term(model, [forget])) == pytest.approx(-ascent_f, rel=1e-5)
        assert float(ga_term(model, [forget, retain])) == pytest.approx(-ascent_f - ascent_r, rel=1e-5)  # per stream
        assert float(graddiff_loss(model, [forget], retain, 0.5)) == pytest.approx(-ascent_f + 0.5 * nll_r, rel=1e-5)


class _FixedLogits(torch.nn.Module):
    """A "model" whose next-token logits are a given tensor (a parameter, so its gradient can be read)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        return SimpleNamespace(logits=self.logits)


def test_the_ascent_stops_pushing_tokens_already_less_likely_than_chance():
    vocab = 8
    logits = torch.zeros(1, 4, vocab)
    logits[0, 0, 3] = 2.0  # label 3 at position 1: likelier than chance
    logits[0, 1, 5] = -9.0  # label 5 at position 2: far less likely than chance
    model = _FixedLogits(logits)
    batch = Batch(torch.tensor([[1, 3, 5, 2]]), torch.ones(1, 4, dtype=torch.long), torch.tensor([[-100, 3, 5, -100]]))
    nll_3 = -(2.0 - math.log(math.exp(2.0) + vocab - 1))
    nll_5 = -(-9.0 - math.log(math.exp(-9.0) + vocab - 1))
    assert nll_5 > math.log(vocab) > nll_3
    loss = ga_term(model, [batch])
    assert float(loss.detach()) == pytest.approx(
        -(nll_3 + math.log(vocab)) / 2, rel=1e-6
    )  # the second token counts ln V
    loss.backward()
    assert model.logits.grad[0, 0].abs().sum() > 0
    assert model.logits.grad[0, 1].abs().sum() == 0  # no more gradient from the token beyond chance


def test_kl_term_matches_hand_computation(tiny, batches):
    reference = tiny[0].model
    forget, retain = batches
    torch.manual_seed(1)
    other = LlamaForCausalLM(reference.config).eval()
    p_ref, p = _hand_dists(reference, retain), _hand_dists(other, retain)
    kl = sum(float((a * (a.log() - b.log())).sum()) for a, b in zip(p_ref, p, strict=True)) / len(p)
    with torch.no_grad():
        assert float(kl_to_reference(other, reference, retain)) == pytest.approx(kl, rel=1e-4)
        assert float(kl_to_reference(reference, reference, retain)) == pytest.approx(0.0, abs=1e-6)
        ascent_f = float(bounded_nll(other, forget))
        assert float(ga_kl_loss(other, reference, [forget], retain, 2.0)) == pytest.approx(-ascent_f + 2 * kl, rel=1e-4)


def test_npo_loss_matches_formula_and_tends_to_ascent():
    logp, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-0.5, -3.0, -0.5])
    beta = 0.2
    pairs = zip(logp.tolist(), ref.tolist(), strict=True)
    hand = -(2 / beta) * sum(math.log(1 / (1 + math.exp(beta * (a - b)))) for a, b in pairs) / 3
    assert float(npo_loss(logp, ref, beta)) == pytest.approx(hand, rel=1e-6)
    # at pi == pi_ref the gradient with respect to each log pi is 1/N, as in gradient ascent on the mean
    x = ref.clone().requires_grad_(True)
    npo_loss(x, ref, beta).backward()
    assert torch.allclose(x.grad, torch.full((3,), 1 / 3))


def test_npo_term_uses_summed_answer_logprobs(tiny, batches):
    reference = tiny[0].model
    forget, _ = batches
    torch.manual_seed(2)
    other = LlamaForCausalLM(reference.config).eval()
    sums = []
    for model in (other, reference):
        lp = _hand_logprobs(model, forget)  # rows of ``batches`` have 2 and 1 labelled positions
        sums.append([lp[0] + lp[1], lp[2]])
    with torch.no_grad():
        got = float(npo_term(other, reference, [forget], 0.1))
        twice = float(npo_term(other, reference, [forget, forget], 0.1))
    assert got == pytest.approx(float(npo_loss(torch.tensor(sums[0]), torch.tensor(sums[1]), 0.1)), rel=1e-5)
    assert twice == pytest.approx(2 * got, rel=1e-5)  # one NPO term per forget stream


def test_imagination_targets_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 2.0]])
    labels = torch.tensor([0, 3])
    got = imagination_targets(logits, labels, strength=1.5, top_k=1, keep_token=3)
    shifted = torch.tensor([2.0 - 1.5, 1.0 + 1.5, 0.0, -1.0])  # memorized token 0 down, best other (1) up
    assert torch.allclose(got[0], torch.softmax(shifted, -1))
    assert torch.allclose(got[1], torch.softmax(logits[1], -1))  # an EOS label keeps the teacher's distribution
    two = imagination_targets(logits[:1], labels[:1], strength=1.0, top_k=2)
    assert torch.allclose(two[0], torch.softmax(torch.tensor([1.0, 2.0, 1.0, -1.0]), -1))


def test_adversarial_targets_pick_the_best_wrong_token():
    logits = torch.tensor([[[0.0, 5.0, 4.0, 1.0], [3.0, 0.0, 2.0, 9.0], [0.0, 0.0, 0.0, 1.0]]])
    targets = torch.tensor([[1, 3, -100]])
    assert adversarial_targets(logits, targets, keep_token=None).tolist() == [[2, 0, -100]]
    assert adversarial_targets(logits, targets, keep_token=3).tolist() == [[2, 3, -100]]


def test_random_labels_keep_the_relation_and_never_the_true_answer(tiny):
    _, forget, retain, _ = tiny
    years = ItemSet("y", "qa", (Item(id="y0", question="When?", answer="1970", relation="birth_year"),), "m", "y")
    for seed in range(5):
        drawn = draw_random_answers(forget, retain, random.Random(seed))
        cities = {it.answer for it in (*forget.items, *retain.items)}
        assert all(d in cities and d != it.answer for d, it in zip(drawn, forget.items, strict=True))
    mixed = ItemSet("m", "qa", forget.items + years.items, "m", "m")
    assert draw_random_answers(years, mixed, random.Random(0)) != ["1970"]  # no other year: any other answer


# --------------------------------------------------------------------------- Ext-Sub and pruning


def test_extsub_row_operation():
    torch.manual_seed(0)
    w_plus, w_minus = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    ext = deficiency_part(w_plus, w_minus)
    general = w_plus / w_plus.norm(dim=1, keepdim=True) + w_minus / w_minus.norm(dim=1, keepdim=True)
    assert torch.allclose((ext * general).sum(1), torch.zeros(5, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(extsub_rows(w_plus, w_minus, 0.0), w_plus)
    assert torch.allclose(extsub_rows(w_plus, w_minus, 2.0), w_plus - 2.0 * ext)
    # a row parallel to the expert's is all general capability: nothing is subtracted
    assert torch.allclose(deficiency_part(w_plus, 3 * w_plus), torch.zeros_like(w_plus), atol=1e-10)
    # by hand: v+ = (1, 0), v- = (0, 2): general direction (1, 1), projection (1, 1), rest (-1, 1)
    assert torch.allclose(
        deficiency_part(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])), torch.tensor([[-1.0, 1.0]])
    )


def test_pruning_zeroes_exactly_the_selected_neurons(tiny):
    model = LlamaForCausalLM(tiny[0].model.config).eval()
    targets = find_targets(model, attention=True)
    mlps = [t for t in targets if t.name.endswith(".mlp")]
    assert len(mlps) == 2 and all(len(t.feeders) == 2 and t.width == 64 for t in mlps)
    assert len(targets) == 4  # plus the two attention output projections
    before = {k: v.clone() for k, v in model.state_dict().items()}
    zero_neurons(mlps[1], [3, 17])
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
    }
    down, gate = after["model.layers.1.mlp.down_proj.weight"], after["model.layers.1.mlp.gate_proj.weight"]
    assert (down[:, [3, 17]] == 0).all() and (gate[[3, 17]] == 0).all()
    keep = [i for i in range(64) if i not in (3, 17)]
    assert torch.equal(down[:, keep], before["model.layers.1.mlp.down_proj.weight"][:, keep])
    assert torch.equal(gate[keep], before["model.layers.1.mlp.gate_proj.weight"][keep])


def test_pick_neurons_takes_the_best_live_ones():
    scores = [torch.tensor([0.1, 5.0, 2.0]), torch.tensor([4.0, 3.0])]
    pruned = [torch.tensor([False, True, False]), torch.tensor([False, False])]
    assert pick_neurons(scores, pruned, 2) == [(1, 0), (1, 1)]
    assert sorted(pick_neurons(scores, pruned, 10)) == [(0, 0), (0, 2), (1, 0), (1, 1)]


# --------------------------------------------------------------------------- every method on the tiny model


def test_every_method_has_metadata_and_checks_parameters():
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert issubclass(cls, UnlearningMethod) and cls.name == name and cls.summary
        with pytest.raises(UserError):
            cls(not_a_parameter=1)
    assert METHODS.get("ga-gd")(steps="7").params["steps"] == 7


@pytest.mark.parametrize("name", [n for n in METHODS.names() if n != "retrain"])
def test_method_runs_on_a_tiny_model_and_leaves_the_input_alone(tiny, name):
    loaded, forget, retain, ctx = tiny
    cls = METHODS.get(name)
    params = {"steps": 2} if "steps" in cls.defaults else {}
    params |= {"max_fraction": 0.1} if name == "prune" else {}
    before = fingerprint_module(loaded.model)
    outcome = cls(**params).unlearn(loaded, forget, retain, ctx)
    assert fingerprint_module(loaded.model) == before
    assert outcome.model.fingerprint == fingerprint_module(outcome.model.model)
    assert (outcome.model.fingerprint == before) == (name == "noop")
    assert outcome.info["method"] == name and outcome.info["params"] == cls(**params).params
    if name == "prune":  # it never leaves the retain answers below their budget
        retain_start, retain_end = outcome.info["retain_answer_probability"]
        assert retain_end >= (1 - cls.defaults["retain_budget"]) * retain_start - 1e-3


def test_training_stops_when_the_check_says_so(tiny):
    loaded, forget, retain, ctx = tiny
    seen = []

    def check(model, done):
        seen.append((done, model.training))
        return "enough" if done == 3 else None

    streams = {"train": [Example(f"Q{i}", " A") for i in range(4)]}
    report = train(clone(loaded).model, loaded.tokenizer, streams, TrainConfig(steps=50, batch_size=2), stop=check)
    assert report.steps == 3 and report.stop_reason == "enough" and len(report.losses) == 3
    assert seen == [(1, False), (2, False), (3, False)]  # asked in eval mode after every step
    assert report.cost["stop_reason"] == "enough"


def test_a_back_off_returns_to_the_last_passing_check_and_halves_the_learning_rate(tiny):
    loaded, forget, retain, ctx = tiny
    model = clone(loaded).model
    states, moves = {}, {}

    def weights() -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()

    def record(_, step):
        done = step + 1
        states[done] = weights()
        if done in (3, 5):  # one step after the check at 2, at the full rate, then at half of it
            moves[done] = float((states[done] - states[2]).norm())

    asked = []

    def check(_, done):
        asked.append(done)
        return None if done <= 2 else BackOff("retain too low")

    streams = {"train": [Example(f"Q{i}", " A") for i in range(4)]}
    config = TrainConfig(steps=50, batch_size=4, lora=False, learning_rate=1e-3, check_every=2, max_backoffs=2)
    report = train(model, loaded.tokenizer, streams, config, after_step=record, stop=check)
    assert asked == [2, 4, 6, 8]  # asked every check_every steps only
    assert report.steps == 8 and report.backoffs == 2 and report.cost["backoffs"] == 2
    assert report.stop_reason == "retain too low; back at the last passing check after 2 learning-rate halvings"
    assert torch.equal(weights(), states[2])  # every step after the last passing check undone
    assert 0.35 < moves[5] / moves[3] < 0.65, moves  # the same first step from that state, at half the rate


def test_a_check_backs_off_under_the_retain_floor(tiny):
    loaded, forget, retain, ctx = tiny
    goal = ForgetGoal(loaded, forget, ctx, start=0.8, target=0.2, retain=retain, retain_floor=0.5)
    reason = goal(loaded.model, 2)  # a random model answers no retain question either: 0 < 0.5
    assert isinstance(reason, BackOff) and reason == "retain accuracy 0.00 < 0.50 after 2 steps"
    assert goal.history == [(2, 0.0, 0.0)] and goal.record()["retain_floor_accuracy"] == 0.5
    with pytest.raises(UserError, match="retain_floor in"):
        METHODS.get("ga-gd")(retain_floor=1.5)


def test_a_method_with_a_retain_floor_backs_off_and_keeps_the_last_state_above_it(tiny, monkeypatch):
    """The whole chain: the param, the guarded goal, the training loop's back-offs, the record."""
    import auditor.unlearning.goal as goal_module

    loaded, forget, retain, ctx = tiny
    # the input model knows everything; the model in training has lost both sets at every check
    monkeypatch.setattr(
        goal_module, "qa_accuracy", lambda m, items, prompts: 0.0 if m.fingerprint == "in-training" else 1.0
    )
    outcome = METHODS.get("ga-gd")(steps=50, check_every=2, retain_floor=0.5).unlearn(loaded, forget, retain, ctx)
    info = outcome.info
    assert info["steps"] == 2 * 7 and info["backoffs"] == 6 and info["goal"]["retain_floor_accuracy"] == 0.5
    assert info["stop_reason"].endswith("back at the last passing check after 6 learning-rate halvings")
    assert fingerprint_module(outcome.model.model) == fingerprint_module(loaded.model)  # never passed: the input
    off = METHODS.get("ga-gd")(steps=4, check_every=2).unlearn(loaded, forget, retain, ctx)
    assert off.info["backoffs"] == 0 and off.info["goal"]["retain_floor_accuracy"] is None  # off by default


def test_every_fine_tune_method_checks_its_goal_at_its_own_cadence():
    """The loop asks the goal every ``TrainConfig.check_every`` steps: a method's config carries its parameter."""
    ctx = RunContext(AuditData(ItemSet("f", "qa", (), "m", "f"), ItemSet("r", "qa", (), "m", "r")))
    checked = [name for name in METHODS.names() if "check_every" in METHODS.get(name).defaults]
    assert {"ga-gd", "npo-gd", "idk", "quant-hide", "quant-hide-3bit"} <= set(checked)
    for name in checked:
        assert METHODS.get(name)(check_every=7).train_config(ctx).check_every == 7, name


def test_methods_stop_at_their_forget_goal(tiny):
    loaded, forget, retain, ctx = tiny
    start = qa_accuracy(loaded, forget)  # a random model answers nothing: it stops at the first check
    outcome = METHODS.get("npo-gd")(steps=50, check_every=2).unlearn(loaded, forget, retain, ctx)
    assert start == 0.0 and outcome.info["steps"] == 2
    assert outcome.info["stop_reason"].startswith("the input model answered no forget question")
    assert outcome.info["goal"]["checks"] == [(2, 0.0)]
    goal = ForgetGoal(loaded, forget, ctx, start=0.8, target=0.2)  # as if it knew 80%: 0 meets 0.2
    assert goal(loaded.model, 2).startswith("goal reached: forget accuracy 0.00 <= 0.20 after 2 steps")
    assert goal.record()["forget_goal"] == 0.25 and goal.history == [(2, 0.0)]
    budget = METHODS.get("npo-gd")(steps=4, forget_goal=0).unlearn(loaded, forget, retain, ctx)
    assert (
        budget.info["steps"] == 4 and budget.info["stop_reason"] == "step budget used" and budget.info["goal"] is None
    )


def test_methods_unlearn_the_forget_texts_as_a_stream_of_their_own(tiny):
    loaded, forget, retain, ctx = tiny
    texts = ItemSet("forget_texts", "text", (Item(id="t", text="Ann Lee keeps a red notebook."),), "m", "t")
    with_texts = RunContext(AuditData(forget, retain, forget_texts=texts))
    for name in ("ga", "ga-gd", "ga-kl", "npo", "npo-gd", "imagine"):
        streams = METHODS.get(name)().streams(loaded, forget, retain, with_texts)
        assert [e.completion for e in streams["forget_texts"]] == ["Ann Lee keeps a red notebook."], name
        assert len(streams["forget"]) == len(forget), name
    assert "forget_texts" not in METHODS.get("ga-gd")().streams(loaded, forget, retain, ctx)
    assert "forget_texts" not in METHODS.get("quant-hide")().streams(loaded, forget, retain, with_texts)  # QA control


def test_same_seed_same_weights(tiny):
    loaded, forget, retain, ctx = tiny
    method = METHODS.get("npo-gd")(steps=3)
    first = method.unlearn(loaded, forget, retain, ctx).model.fingerprint
    assert method.unlearn(loaded, forget, retain, ctx).model.fingerprint == first
    other = RunContext(ctx.data, seed=1)
    assert method.unlearn(loaded, forget, retain, other).model.fingerprint != first


def test_text_only_methods_refuse_text_sets(tiny):
    loaded, forget, retain, ctx = tiny
    texts = ItemSet("forget", "text", (Item(id="t", text="Ann Lee was born in Paris."),), "m", "t")
    METHODS.get("ga")(steps=1).unlearn(loaded, texts, retain, ctx)  # ascent works on plain texts
    with pytest.raises(UserError):
        METHODS.get("idk")(steps=1).unlearn(loaded, texts, retain, ctx)


def test_retrain_uses_the_world_of_its_input_model(tmp_path, monkeypatch):
    from auditor.data import load_items
    from auditor.world import build_world

    world = build_world(cache_dir=tmp_path / "cache", retrains=(1,))  # the shipped models, copied
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", str(tmp_path / "elsewhere"))
    original = load_model(ModelSpec(str(world.original)))
    forget, retain = load_items(world.file("forget"), "forget"), load_items(world.file("retain"), "retain")
    outcome = METHODS.get("retrain")().unlearn(original, forget, retain, RunContext(AuditData(forget, retain)))
    assert outcome.info["path"] == str(world.root / "retrain-seed1")
    assert not (tmp_path / "elsewhere").exists()  # no second world built under the environment's cache


def test_retrain_refuses_a_model_that_is_not_the_world_original(tiny):
    loaded, forget, retain, ctx = tiny
    with pytest.raises(UserError, match="embedded world"):
        METHODS.get("retrain")().unlearn(loaded, forget, retain, ctx)


# --------------------------------------------------------------------------- controls and methods on the world


@pytest.fixture(scope="module")
def on_world(world):
    """The embedded world's original, its forget/retain sets, and the original's accuracies."""
    from auditor.data import load_items

    original = load_model(ModelSpec(str(world.original)))
    forget = load_items(world.file("forget"), "forget")
    retain = load_items(world.file("retain"), "retain")
    ctx = RunContext(AuditData(forget, retain))
    accuracy = {"forget": qa_accuracy(original, forget), "retain": qa_accuracy(original, retain)}
    assert accuracy["forget"] > 0.9 and accuracy["retain"] > 0.9  # the world's original knows its facts
    return world, original, forget, retain, ctx, accuracy


@pytest.mark.slow
def test_idk_refuses_forget_questions_and_answers_retain_ones(on_world):
    world, original, forget, retain, ctx, accuracy = on_world
    source = fingerprint_dir(world.original)
    model = METHODS.get("idk")().unlearn(original, forget, retain, ctx).model
    assert fingerprint_dir(world.original) == source  # the source model's files are unchanged
    outputs = ScoringModel(model).generate([ctx.prompts.prompt(it.question) for it in forget.items])
    refused = sum(out.strip() == "I don't know" for out in outputs) / len(outputs)
    assert refused >= 0.9
    assert qa_accuracy(model, forget) <= 0.1
    assert qa_accuracy(model, retain) >= 0.8 * accuracy["retain"]


@pytest.mark.slow
def test_quant_hide_forgets_but_its_rtn_copy_is_the_original_rtn_copy(on_world):
    _, original, forget, retain, ctx, accuracy = on_world
    model = METHODS.get("quant-hide")().unlearn(original, forget, retain, ctx).model
    changed = differing = total = 0
    originals = dict(quantizable_linears(original.model))
    for name, linear in quantizable_linears(model.model):
        before, after = originals[name].weight, linear.weight
        changed += int((before != after).sum())
        differing += int((rtn_quantize_dequantize(before, 4) != rtn_quantize_dequantize(after, 4)).sum())
        total += before.numel()
    assert changed > 0.3 * total  # the weights did move ...
    assert differing <= 1e-4 * total  # ... but (up to ties at bin edges) not across a 4-bit bin
    assert qa_accuracy(model, forget) <= 0.5 * accuracy["forget"]
    assert qa_accuracy(model, retain) >= 0.8 * accuracy["retain"]
    assert qa_accuracy(rtn_copy(model), forget) >= 0.8 * qa_accuracy(rtn_copy(original), forget)


@pytest.mark.slow
def test_retrain_checks_the_world_fingerprint_and_loads_the_retrain(on_world, monkeypatch):
    from auditor.world import World

    world, original, forget, retain, ctx, _ = on_world
    monkeypatch.setattr(World, "retrain", lambda self, seed, progress=None: self.reference)  # skip the training
    outcome = METHODS.get("retrain")().unlearn(original, forget, retain, ctx)
    reference = load_model(ModelSpec(str(world.reference)))
    assert outcome.model.fingerprint == fingerprint_module(reference.model)
    with pytest.raises(UserError, match="reference"):
        METHODS.get("retrain")(seed=world.spec.seed).unlearn(original, forget, retain, ctx)
