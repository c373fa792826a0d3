"""Greedy generation with a KV cache, and the same prefill scoring the expected answers teacher-forced."""

from __future__ import annotations

import copy
import inspect
import weakref
from collections.abc import Sequence

import numpy as np
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from auditor.lm.head import chunked_logprobs, identity, states_at
from auditor.lm.teacher_forcing import (
    MAX_BATCH_ROWS,
    MAX_BATCH_TOKENS,
    TokenStats,
    _encoded,
    length_buckets,
    teacher_forced,
)
from auditor.lm.tokens import EncodedPair, pad_token_id


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    found = [i for i in (text.find(marker) for marker in stop) if i != -1]
    return text[: min(found, default=len(text))]


_TOKEN_TEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> the text of each token


def stop_token_ids(tokenizer, stop: Sequence[str]) -> torch.Tensor:
    """Ids of the tokens whose text contains one of ``stop``.

    Every token's text is decoded once per tokenizer (by the tokenizer's own decoder, so
    byte-level and SentencePiece vocabularies read alike: 0.2 s for 49,152 tokens) and
    shared by every model variant of an audit.
    """
    if not stop:
        return torch.zeros(0, dtype=torch.long)
    if tokenizer not in _TOKEN_TEXTS:
        _TOKEN_TEXTS[tokenizer] = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    ids = [i for i, text in enumerate(_TOKEN_TEXTS[tokenizer]) if any(m in text for m in stop)]
    return torch.tensor(ids, dtype=torch.long)


def _stop_tensor(tokenizer, stop: Sequence[str], stop_ids: torch.Tensor | None) -> torch.Tensor:
    """The token ids that end a row: those holding a stop string, and EOS."""
    stops = stop_token_ids(tokenizer, stop) if stop_ids is None else stop_ids
    if tokenizer.eos_token_id is not None:
        stops = torch.cat([stops, torch.tensor([tokenizer.eos_token_id])])
    return stops


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


# What the installed transformers calls the KV cache: ``cache`` in recent releases (``past_key_values`` is
# deprecated there and goes in 5.40), ``past_key_values`` before.
LIBRARY_CACHE_KEYWORD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def cache_keyword(model) -> str:
    """The keyword ``model``'s forward takes a KV cache by; a forward that names neither (a wrapper taking
    ``**kwargs``, such as a PEFT model) gets the installed transformers' own."""
    for name in ("cache", "past_key_values"):
        if _accepts(model, name):
            return name
    return LIBRARY_CACHE_KEYWORD


def _cache_of(out):
    """The KV cache a forward pass returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _left_padded(encoded: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask with every prompt ending at the last column."""
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, width - len(tokens) :] = torch.tensor(tokens)
        attention[row, width - len(tokens) :] = 1
    return ids, attention


def _prefill(model, ids: torch.Tensor, attention: torch.Tensor):
    """One pass over left-padded prompts: the KV cache, the logits after each prompt, its last position ids."""
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    out = model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True, **extra)
    return _cache_of(out), out.logits[:, -1], positions[:, -1:]


def _decode(
    model,
    cache,
    next_ids: torch.Tensor,
    attention: torch.Tensor,
    last: torch.Tensor,
    max_new_tokens: int,
    stop_ids: torch.Tensor,
    limits: Sequence[int] | None = None,
):
    """New token ids per row, greedily from a prefilled cache; a row leaves the batch at a stop token.

    A row ends after emitting EOS or a token of ``stop_ids`` (kept in its output), or after its own limit of new
    tokens (``limits``, at most ``max_new_tokens``); finished rows leave the batch and the cache.
    """
    alive = torch.arange(len(next_ids), device=next_ids.device)  # which input row each decoding row is
    keyword = cache_keyword(model)
    limits = [min(max_new_tokens, n) for n in limits] if limits is not None else [max_new_tokens] * len(next_ids)
    tokens: list[list[int]] = [[] for _ in range(len(next_ids))]
    done = [False] * len(next_ids)
    for _ in range(max(limits, default=0)):
        stopped = torch.isin(next_ids, stop_ids)
        for row, token, stops in zip(alive.tolist(), next_ids.tolist(), stopped.tolist(), strict=True):
            if not done[row]:
                tokens[row].append(token)
                done[row] = stops or len(tokens[row]) >= limits[row]
        if all(done):
            break
        finished = torch.tensor([done[row] for row in alive.tolist()], device=next_ids.device)
        if bool(finished.any()) and hasattr(cache, "batch_select_indices"):
            keep = (~finished).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            alive, next_ids, attention, last = alive[keep], next_ids[keep], attention[keep], last[keep]
        attention = torch.cat([attention, attention.new_ones((len(attention), 1))], dim=1)
        last = last + 1
        out = model(
            input_ids=next_ids[:, None],
            attention_mask=attention,
            position_ids=last,
            use_cache=True,
            **{keyword: cache},
        )
        cache, next_ids = _cache_of(out), out.logits[:, -1].argmax(-1)
    return tokens


def _greedy_tokens(model, ids: torch.Tensor, attention: torch.Tensor, max_new_tokens: int, stop_ids: torch.Tensor):
    """New token ids per row: greedy decoding with a KV cache (see ``_decode``)."""
    cache, logits, last = _prefill(model, ids, attention)
    return _decode(model, cache, logits.argmax(-1), attention, last, max_new_tokens, stop_ids)


@torch.no_grad()
def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    stop: Sequence[str] = ("\n",),
    max_rows: int = MAX_BATCH_ROWS,
    max_tokens: int = MAX_BATCH_TOKENS,
    stop_ids: torch.Tensor | None = None,
) -> list[str]:
    """Greedy continuations of each prompt, cut at EOS or the first stop string.

    A row stops early once it emits a token holding a stop string (``stop_ids``,
    computed from the vocabulary when not given); the text is cut at the first
    stop string either way, so early stopping never changes an output.
    """
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"] if prompts else []
    device = next(model.parameters()).device
    stops = _stop_tensor(tokenizer, stop, stop_ids).to(device)
    outputs: list[str] = [""] * len(prompts)
    for bucket in length_buckets([len(e) for e in encoded], max_rows, max_tokens, extra=max_new_tokens):
        ids, attention = _left_padded([encoded[i] for i in bucket], pad_token_id(tokenizer))
        new_tokens = _greedy_tokens(model, ids.to(device), attention.to(device), max_new_tokens, stops)
        for i, tokens in zip(bucket, new_tokens, strict=True):
            outputs[i] = _cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), stop)
    return outputs


Continuation = tuple[tuple[int, ...], tuple[int, ...]]  # the tokens after a prompt and their answer mask


def _continuation(pair: EncodedPair, prompt_ids: Sequence[int]) -> Continuation | None:
    """What follows the prompt in ``pair``, when prompt+answer tokenized together starts with the prompt's own tokens.

    None when a BPE merge crosses the boundary (then the prompt's cache holds other tokens).
    """
    n = len(prompt_ids)
    if tuple(pair.input_ids[:n]) != tuple(prompt_ids) or any(pair.answer_mask[:n]):
        return None
    return pair.input_ids[n:], pair.answer_mask[n:]


CONTINUATION_SHARE = 4  # continuations are scored on rows copied out of the prompts' cache: a quarter at a time


def _rows_of(cache, index: torch.Tensor):
    """A cache of the ``index`` rows of ``cache``, which stays as it is: the layers are copied without their tensors,
    and selecting rows gives each copy new tensors (the prompts' cache is not duplicated first)."""
    copied = copy.copy(cache)
    copied.layers = [copy.copy(layer) for layer in cache.layers]
    copied.batch_select_indices(index)
    return copied


def _score_continuations(model, cache, first_logits, attention, last, rows: list[int], conts: list[Continuation]):
    """Teacher-forced statistics of continuations after prefilled prompts (``rows``: each one's prompt row).

    The prompts' rows are copied out of their cache, repeated per continuation,
    so the cache itself is left for decoding. A continuation's first token is predicted
    by the prompt's last logits, the others by the continuation's own pass.
    """
    width = max(len(ids) for ids, _ in conts)
    ids = torch.zeros((len(conts), max(width, 1)), dtype=torch.long)  # padding: masked out, never scored
    own = torch.zeros_like(ids)
    scored = torch.zeros_like(ids, dtype=torch.bool)
    for row, (tokens, mask) in enumerate(conts):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        own[row, : len(tokens)] = 1
        scored[row, : len(mask)] = torch.tensor(mask, dtype=torch.bool)
    device = attention.device
    ids, own, index = ids.to(device), own.to(device), torch.tensor(rows, device=device)
    copied = _rows_of(cache, index)
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.cat([attention[index], own], dim=1),
        "position_ids": last[index] + 1 + torch.arange(ids.shape[1], device=device),
        cache_keyword(model): copied,
        "use_cache": True,
    }
    r, t = torch.nonzero(scored.to(device), as_tuple=True)
    targets, later = ids[r, t], t > 0  # a first token is predicted by the prompt's last logits
    logp = torch.empty(len(r), dtype=torch.float32, device=device)
    states, head = states_at(model, r[later], t[later] - 1, **inputs)
    logp[later] = chunked_logprobs(model, states, head, targets[later])[0]
    firsts = first_logits[index[r[~later]]]
    logp[~later] = chunked_logprobs(model, firsts, identity, targets[~later])[0]
    token_logp, target_ids = logp.cpu().double().numpy(), targets.cpu().numpy()
    ends = np.cumsum(torch.bincount(r.cpu(), minlength=len(conts)).numpy())
    return [
        TokenStats(target_ids[start:end], token_logp[start:end])
        for start, end in zip(np.r_[0, ends[:-1]], ends, strict=True)
    ]


@torch.no_grad()
def generate_scored(
    model,
    tokenizer,
    prompts: Sequence[str],
    answers: Sequence[Sequence[str]],
    max_new_tokens: int = 32,
    stop: Sequence[str] = ("\n",),
    max_rows: int = MAX_BATCH_ROWS,
    max_tokens: int = MAX_BATCH_TOKENS,
    stop_ids: torch.Tensor | None = None,
    limits: Sequence[int] | None = None,
) -> tuple[list[str], list[list[TokenStats]]]:
    """``greedy_generate`` of each prompt and ``teacher_forced`` statistics of its answers, from one prefill.

    The prompt's KV cache from the generation prefill also scores its answers.
    An answer whose joint tokenization does not start with the prompt's own
    tokens, or a model whose cache cannot be copied row by row, falls back to
    ``teacher_forced``; either way the numbers are the model's own. ``limits``:
    each prompt's own cap on new tokens, under ``max_new_tokens``.
    """
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"] if prompts else []
    limits = list(limits) if limits is not None else [max_new_tokens] * len(encoded)
    joint = iter(_encoded(tokenizer, [(p, a) for p, ans in zip(prompts, answers, strict=True) for a in ans]))
    conts = [[_continuation(next(joint), ids) for _ in ans] for ids, ans in zip(encoded, answers, strict=True)]
    device = next(model.parameters()).device
    stops = _stop_tensor(tokenizer, stop, stop_ids).to(device)
    texts: list[str] = [""] * len(prompts)
    stats: list[list[TokenStats | None]] = [[None] * len(ans) for ans in answers]
    for bucket in length_buckets([len(e) for e in encoded], max_rows, max_tokens, extra=max_new_tokens):
        ids, attention = _left_padded([encoded[i] for i in bucket], pad_token_id(tokenizer))
        ids, attention = ids.to(device), attention.to(device)
        cache, logits, last = _prefill(model, ids, attention)
        todo = [(row, i, j, c) for row, i in enumerate(bucket) for j, c in enumerate(conts[i]) if c is not None]
        if todo and hasattr(cache, "layers") and hasattr(cache, "batch_select_indices"):
            widest = ids.shape[1] + max(len(c[0]) for *_, c in todo)
            per_chunk = max(1, min(max_rows, max_tokens // (CONTINUATION_SHARE * widest)))
            for start in range(0, len(todo), per_chunk):
                chunk = todo[start : start + per_chunk]
                rows, chunk_conts = [row for row, *_ in chunk], [c for *_, c in chunk]
                scored = _score_continuations(model, cache, logits, attention, last, rows, chunk_conts)
                for (_, i, j, _), item_stats in zip(chunk, scored, strict=True):
                    stats[i][j] = item_stats
        row_limits = [limits[i] for i in bucket]
        new_tokens = _decode(model, cache, logits.argmax(-1), attention, last, max_new_tokens, stops, row_limits)
        for i, tokens in zip(bucket, new_tokens, strict=True):
            texts[i] = _cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), stop)
    rest = [(i, j) for i, per in enumerate(stats) for j, st in enumerate(per) if st is None]
    if rest:
        pairs = [(prompts[i], answers[i][j]) for i, j in rest]
        for (i, j), item_stats in zip(rest, teacher_forced(model, tokenizer, pairs, max_rows, max_tokens), strict=True):
            stats[i][j] = item_stats
    return texts, stats
