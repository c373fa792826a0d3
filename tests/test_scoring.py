"""Scoring kernels against plain one-item-at-a-time computations on a tiny random model."""

from __future__ import annotations

import warnings
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import auditor.lm.budget
import auditor.lm.generation
import auditor.lm.head
from auditor.lm.budget import automatic_token_cap, kv_bytes_per_token
from auditor.lm.generation import LIBRARY_CACHE_KEYWORD, cache_keyword
from auditor.lm.routing import RoutedScoringModel
from auditor.lm.scoring import (
    MAX_BATCH_TOKENS,
    ScoringModel,
    generate_scored,
    greedy_generate,
    length_buckets,
    teacher_forced,
)
from auditor.lm.tokens import encode_pair
from auditor.lm.training import Example, TrainConfig, train
from auditor.world.tokenizer import train_tokenizer

PROMPTS = [f"Question: Where does person {i} of house {i * 7 % 5} live?\nAnswer:" for i in range(12)]
ANSWERS = [f" Town{i % 4}" + " and more" * (i % 3) for i in range(12)]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([p + a for p, a in zip(PROMPTS, ANSWERS, strict=True)] * 3, 320)


@pytest.fixture(scope="module")
def tiny(tok, make_tiny_llama):
    return make_tiny_llama(tok, hidden_size=32, intermediate_size=64).eval()


def plain_stats(model, tok, prompt, answer):
    """One item, no padding: log p of each answer token and the entropy-like moments, by hand."""
    pair = encode_pair(tok, prompt, answer)
    ids = torch.tensor([pair.input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    rows = []
    for t in range(1, len(pair.input_ids)):
        if pair.answer_mask[t]:
            logp = torch.log_softmax(logits[t - 1], -1)
            mu = float((logp.exp() * logp).sum())
            var = float((logp.exp() * (logp - mu) ** 2).sum())
            rows.append((float(logp[pair.input_ids[t]]), mu, var))
    return np.array(rows)


def test_first_answer_token_is_scored(tok):
    pair = encode_pair(tok, PROMPTS[0], ANSWERS[0])
    first = pair.answer_mask.index(1)
    assert tok.decode([pair.input_ids[first]]).strip().startswith("Town")
    assert pair.input_ids[0] == tok.bos_token_id and pair.answer_mask[0] == 0


def test_training_marks_eos(tok):
    pair = encode_pair(tok, PROMPTS[1], ANSWERS[1], add_eos=True)
    assert pair.input_ids[-1] == tok.eos_token_id and pair.answer_mask[-1] == 1


@pytest.mark.parametrize(("max_rows", "max_tokens"), [(1, 8192), (3, 8192), (32, 8192), (32, 40)])
def test_batched_matches_plain(tiny, tok, max_rows, max_tokens):
    pairs = list(zip(PROMPTS, ANSWERS, strict=True))
    batched = teacher_forced(tiny, tok, pairs, max_rows=max_rows, max_tokens=max_tokens, moments=True)
    plain = teacher_forced(tiny, tok, pairs, max_rows=max_rows, max_tokens=max_tokens)
    for stats, without, prompt, answer in zip(batched, plain, PROMPTS, ANSWERS, strict=True):
        expected = plain_stats(tiny, tok, prompt, answer)
        got = np.stack([stats.logprobs, stats.mean_logprob, stats.var_logprob], axis=1)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert not without.has_moments
        np.testing.assert_allclose(without.logprobs, expected[:, 0], atol=1e-5)


def test_logits_a_few_positions_at_a_time_give_the_same_statistics(tiny, tok, monkeypatch):
    monkeypatch.setattr(auditor.lm.head, "LOGIT_CHUNK_BYTES", 4 * tiny.config.vocab_size * 3)  # 3 rows per chunk
    pairs = list(zip(PROMPTS, ANSWERS, strict=True))
    for stats, (prompt, answer) in zip(teacher_forced(tiny, tok, pairs, moments=True), pairs, strict=True):
        got = np.stack([stats.logprobs, stats.mean_logprob, stats.var_logprob], axis=1)
        np.testing.assert_allclose(got, plain_stats(tiny, tok, prompt, answer), atol=1e-5)
    _scored_against_separate(tiny, tok, [[a, " Town1 and more"] for a in ANSWERS])


def test_automatic_token_cap_keeps_the_kv_cache_to_a_share_of_the_weights(monkeypatch):
    config = LlamaConfig(vocab_size=8000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=1)  # fmt: skip
    model = LlamaForCausalLM(config)
    assert kv_bytes_per_token(model) == 2 * 2 * 1 * 8 * 4  # keys and values, layers, kv heads, head dim, float32
    assert automatic_token_cap(model) == MAX_BATCH_TOKENS  # under LARGE_MODEL parameters: no cap
    monkeypatch.setattr(auditor.lm.budget, "LARGE_MODEL", 0)
    weight_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert automatic_token_cap(model) == int(0.25 * weight_bytes / 128)  # 2 MB of weights, 128 B per token
    assert 512 < automatic_token_cap(model) < MAX_BATCH_TOKENS
    monkeypatch.setattr(auditor.lm.budget, "KV_SHARE", 1e-6)
    assert automatic_token_cap(model) == 512  # the floor


class ScaledLogits(LlamaForCausalLM):
    """A model whose forward changes the logits after the output head (like Gemma's softcapping)."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = 30 * torch.tanh(out.logits / 3)
        return out


def test_head_on_answer_positions_only_where_it_gives_the_model_logits(tiny, tok):
    capped = ScaledLogits(tiny.config).eval()
    capped.load_state_dict(tiny.state_dict())
    pairs = list(zip(PROMPTS, ANSWERS, strict=True))
    for stats, prompt, answer in zip(teacher_forced(capped, tok, pairs), PROMPTS, ANSWERS, strict=True):
        pair = encode_pair(tok, prompt, answer)
        with torch.no_grad():
            logits = capped(input_ids=torch.tensor([pair.input_ids])).logits[0]
        logp = torch.log_softmax(logits, -1)
        expected = [float(logp[t - 1, pair.input_ids[t]]) for t in range(1, len(pair.input_ids)) if pair.answer_mask[t]]
        np.testing.assert_allclose(stats.logprobs, expected, atol=1e-5)


def test_generation_does_not_depend_on_batch_padding(tiny, tok):
    alone = [greedy_generate(tiny, tok, [p], max_new_tokens=6, stop=())[0] for p in PROMPTS[:6]]
    together = greedy_generate(tiny, tok, PROMPTS[:6], max_new_tokens=6, stop=(), max_rows=6)
    assert alone == together


def test_generation_matches_transformers_generate(tiny, tok):
    ours = greedy_generate(tiny, tok, PROMPTS, max_new_tokens=8, stop=())
    for prompt, text in zip(PROMPTS, ours, strict=True):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = tiny.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        assert text == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_early_stopping_never_changes_an_output(tiny, tok):
    stop = tuple({tok.decode([i]) for i in range(40, 60)} - {""})  # stop strings the tiny model does emit
    stopped = greedy_generate(tiny, tok, PROMPTS, max_new_tokens=12, stop=stop)
    full = greedy_generate(tiny, tok, PROMPTS, max_new_tokens=12, stop=(), max_rows=len(PROMPTS))
    assert stopped == [_cut(text, stop) for text in full]
    assert any(a != b for a, b in zip(stopped, full, strict=True))  # some row did stop


def _cut(text: str, stop: tuple[str, ...]) -> str:
    found = [text.find(m) for m in stop if m in text]
    return text[: min(found)] if found else text


def _scored_against_separate(model, tok, answers, prompts=PROMPTS, **budget):
    texts, stats = generate_scored(model, tok, prompts, answers, max_new_tokens=8, stop=(), **budget)
    assert texts == greedy_generate(model, tok, prompts, max_new_tokens=8, stop=())
    for prompt, prompt_answers, prompt_stats in zip(prompts, answers, stats, strict=True):
        separate = teacher_forced(model, tok, [(prompt, a) for a in prompt_answers])
        assert len(prompt_stats) == len(prompt_answers)
        for got, expected in zip(prompt_stats, separate, strict=True):
            np.testing.assert_array_equal(got.token_ids, expected.token_ids)
            np.testing.assert_allclose(got.logprobs, expected.logprobs, atol=1e-5)


@pytest.mark.parametrize(("max_rows", "max_tokens"), [(256, 8192), (3, 8192), (32, 60)])
def test_generation_prefill_scores_answers_like_teacher_forcing(tiny, tok, monkeypatch, max_rows, max_tokens):
    fallback: list = []
    plain = auditor.lm.generation.teacher_forced  # the fallback generate_scored calls

    def counting(model, tokenizer, pairs, *args):
        fallback.extend(pairs)
        return plain(model, tokenizer, pairs, *args)

    monkeypatch.setattr(auditor.lm.generation, "teacher_forced", counting)
    answers = [[a, " Town9", ""][: 1 + i % 3] for i, a in enumerate(ANSWERS)]  # several answers, an empty one
    _scored_against_separate(tiny, tok, answers, max_rows=max_rows, max_tokens=max_tokens)
    assert not fallback  # every prompt's cache served its answers
    cut = [p + " Tow" for p in PROMPTS]  # + "n1": BPE merges " Tow" and "n" into " Town", so the prompt's tokens differ
    fallback.clear()
    _scored_against_separate(tiny, tok, [["n1", "\n"] for _ in cut], cut, max_rows=max_rows, max_tokens=max_tokens)
    assert sorted(fallback) == sorted((p, "n1") for p in cut)  # "\n" follows the prompt's own tokens


def test_a_row_stops_at_its_own_limit(tiny, tok):
    """Per-row caps on new tokens: each text is its uncapped text's first tokens, the scores unchanged."""
    answers = [[a] for a in ANSWERS]
    texts, stats = generate_scored(tiny, tok, PROMPTS, answers, max_new_tokens=8, stop=())
    limits = [1 + i % 3 for i in range(len(PROMPTS))]
    capped, capped_stats = generate_scored(tiny, tok, PROMPTS, answers, max_new_tokens=8, stop=(), limits=limits)
    for text, short, limit in zip(texts, capped, limits, strict=True):
        assert short == tok.decode(tok(text, add_special_tokens=False)["input_ids"][:limit])
    for full, cut in zip(stats, capped_stats, strict=True):
        np.testing.assert_array_equal(full[0].logprobs, cut[0].logprobs)


def test_generation_prefill_scores_with_the_models_own_logits(tiny, tok):
    capped = ScaledLogits(tiny.config).eval()
    capped.load_state_dict(tiny.state_dict())
    answers = [[a] for a in ANSWERS]
    _scored_against_separate(capped, tok, answers)  # equal to teacher forcing through the capped forward
    capped_stats = generate_scored(capped, tok, PROMPTS, answers, max_new_tokens=2, stop=())[1]
    plain_stats = generate_scored(tiny, tok, PROMPTS, answers, max_new_tokens=2, stop=())[1]
    assert any(  # the cap changes the scores: they came from the model's forward, not its bare head
        not np.allclose(c[0].logprobs, p[0].logprobs, atol=1e-4) for c, p in zip(capped_stats, plain_stats, strict=True)
    )


def test_the_kv_cache_goes_by_the_name_the_installed_transformers_uses(tiny, tok):
    capped = ScaledLogits(tiny.config).eval()  # a forward that names neither keyword
    assert cache_keyword(tiny) == cache_keyword(capped) == LIBRARY_CACHE_KEYWORD
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for model in (tiny, capped):
            generate_scored(model, tok, PROMPTS, [[a, " Town9"] for a in ANSWERS], max_new_tokens=4, stop=())
    assert not [w for w in caught if "past_key_values" in str(w.message)]  # no deprecated name (gone in 5.40)


def test_scoring_model_generate_scored_memoizes_both(tiny, tok):

    lm = ScoringModel(SimpleNamespace(model=tiny, tokenizer=tok))
    lm.token_stats([(PROMPTS[0], ANSWERS[0])])
    first = lm.generate_scored(PROMPTS[:4], [[a] for a in ANSWERS[:4]], max_new_tokens=8, stop=())
    assert lm.sequences_scored == 4 and lm.prompts_generated == 4  # the held pair was not scored again
    again = lm.generate_scored(PROMPTS[:4], [[a, " Town9"] for a in ANSWERS[:4]], max_new_tokens=8, stop=())
    assert lm.sequences_scored == 8 and lm.prompts_generated == 4  # new answers of generated prompts: teacher-forced
    assert [text for text, _ in again] == [text for text, _ in first] == lm.generate(PROMPTS[:4], 8, stop=())
    assert all(a[1][0] is f[1][0] for a, f in zip(again, first, strict=True))


def test_length_buckets_respect_rows_and_tokens():
    lengths = [5, 40, 7, 12, 30, 3, 100]
    buckets = length_buckets(lengths, max_rows=3, max_tokens=60)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for bucket in buckets:
        assert len(bucket) <= 3
        assert len(bucket) == 1 or len(bucket) * max(lengths[i] for i in bucket) <= 60
    assert [6] in buckets  # too long for the token budget: alone


def test_scoring_model_memoizes(tiny, tok):

    lm = ScoringModel(SimpleNamespace(model=tiny, tokenizer=tok))
    pairs = list(zip(PROMPTS, ANSWERS, strict=True))
    lm.token_stats(pairs[:5])
    lm.token_stats(pairs)
    lm.token_stats(pairs[3:])
    assert lm.sequences_scored == len(pairs)
    assert all(s.has_moments for s in lm.token_stats(pairs[:2], moments=True))  # moments: those two again
    lm.token_stats(pairs[:4])
    assert lm.sequences_scored == len(pairs) + 2


def test_routed_model_never_scores_a_trained_subject(tiny, tok):

    a = ScoringModel(SimpleNamespace(model=tiny, tokenizer=tok))
    b = ScoringModel(SimpleNamespace(model=tiny, tokenizer=tok))
    routed = RoutedScoringModel([(a, frozenset({"x"})), (b, frozenset({"y"}))])
    pairs = list(zip(PROMPTS[:3], ANSWERS[:3], strict=True))
    out = routed.token_stats(pairs, groups=["y", "x", "z"])
    assert out[0] is not None and out[1] is not None and out[2] is not None
    assert a.sequences_scored == 2 and b.sequences_scored == 1  # "x" went to b, "y" and "z" to a
    routed_both = RoutedScoringModel([(a, frozenset({"x", "y"}))])
    assert routed_both.token_stats(pairs[:1], groups=["x"]) == [None]
    with pytest.raises(ValueError, match="groups"):  # without groups every item went to a model trained on it
        routed.token_stats(pairs)
    untrained = RoutedScoringModel([(a, frozenset())])  # no subjects seen: nothing can leak
    assert untrained.token_stats(pairs[:1])[0] is not None


def test_training_lowers_loss_and_is_deterministic(tiny, tok):
    import copy

    examples = [Example(p, a) for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    config = TrainConfig(steps=15, learning_rate=1e-2, batch_size=4, lora=True, seed=3)
    first = train(copy.deepcopy(tiny), tok, {"train": examples}, config)
    second = train(copy.deepcopy(tiny), tok, {"train": examples}, config)
    assert first.losses[-1] < first.losses[0]
    for (name, p1), (_, p2) in zip(first.model.state_dict().items(), second.model.state_dict().items(), strict=True):
        assert torch.equal(p1, p2), name
    assert not any("lora" in name for name in first.model.state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recomputed = train(copy.deepcopy(tiny), tok, {"train": examples}, replace(config, checkpointing=True))
    assert recomputed.losses == pytest.approx(first.losses, rel=1e-5)  # checkpointing trades time, not results
    assert not [w for w in caught if "gradient_checkpointing_" in str(w.message)]  # names transformers v6 removes
    model = recomputed.model
    on = model.is_activation_checkpointing if hasattr(model, "is_activation_checkpointing") else None
    assert on is False or (on is None and not model.is_gradient_checkpointing)


def test_automatic_batches_halve_on_out_of_memory(tiny, tok, monkeypatch):
    pairs = list(zip(PROMPTS, ANSWERS, strict=True))
    expected = ScoringModel(SimpleNamespace(model=tiny, tokenizer=tok)).token_stats(pairs)
    real, sizes = auditor.lm.scoring.teacher_forced, []

    def tight(model, tokenizer, todo, max_rows, max_tokens, moments):
        sizes.append(max_rows)
        if max_rows > 64:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, tokenizer, todo, max_rows, max_tokens, moments)

    monkeypatch.setattr(auditor.lm.scoring, "teacher_forced", tight)
    lm = ScoringModel(SimpleNamespace(model=tiny, tokenizer=tok))
    assert all(np.array_equal(a.logprobs, b.logprobs) for a, b in zip(lm.token_stats(pairs), expected, strict=True))
    assert sizes == [256, 128, 64] and lm.max_rows == 64  # halved twice, then kept for the next calls
    fixed = ScoringModel(SimpleNamespace(model=tiny, tokenizer=tok, spec=SimpleNamespace(batch_size=100)))
    assert fixed.max_rows == 100 and not fixed.halving
    with pytest.raises(torch.OutOfMemoryError):  # a batch size the user gave is kept: the error is theirs
        fixed.token_stats(pairs)
