"""Batched kernels: teacher-forced token statistics and greedy generation, behind one cached interface.

``ScoringModel`` is the narrow model interface probes use (lm-eval's
``loglikelihood`` / ``generate_until``): it never loads weights and memoizes
every result, so probes that ask for the same (prompt, answer) pair share one
forward pass. ``RoutedScoringModel`` serves an attack that produced several
models (relearning folds): each request goes to a model whose fine-tune never
saw the request's subject.

Which tokens count is defined once in ``auditor.tokens``.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from auditor.tokens import EncodedPair, encode_pairs
from auditor.training import pad_token_id


@dataclass(frozen=True)
class TokenStats:
    """Per answer token: its log-probability and, when asked for, the mean and variance of log p under the model.

    ``mean_logprob`` and ``var_logprob`` are E[log p(z)] and Var[log p(z)] for z drawn
    from the model's own next-token distribution at that position (Min-K%++ needs them);
    ``None`` unless the statistics were computed with ``moments=True``.
    """

    token_ids: np.ndarray
    logprobs: np.ndarray
    mean_logprob: np.ndarray | None = None
    var_logprob: np.ndarray | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.logprobs.size)

    @property
    def total(self) -> float:
        return float(self.logprobs.sum())

    @property
    def mean(self) -> float:
        """Mean log-probability per answer token (minus the average NLL); NaN without tokens."""
        return float(self.logprobs.mean()) if self.logprobs.size else float("nan")

    @property
    def has_moments(self) -> bool:
        return self.mean_logprob is not None


MAX_BATCH_ROWS = 256  # sequences per forward pass
MAX_BATCH_TOKENS = 8192  # padded tokens per forward pass (generation counts the new tokens too)


def length_buckets(
    lengths: Sequence[int], max_rows: int = MAX_BATCH_ROWS, max_tokens: int = MAX_BATCH_TOKENS, extra: int = 0
) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most ``max_rows`` rows and ``max_tokens`` padded tokens.

    ``extra`` is added to every length (the tokens generation appends). A batch
    always takes at least one sequence, however long.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        width = lengths[i] + extra  # ascending order: the widest of the batch so far
        if current and (len(current) >= max_rows or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    return [*batches, current] if current else batches


_ENCODINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {(prompt, answer): EncodedPair}


def _encoded(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[EncodedPair]:
    """``encode_pairs``, memoized per tokenizer: every model variant of an audit scores the same pairs."""
    memo = _ENCODINGS.setdefault(tokenizer, {})
    todo = list(dict.fromkeys(p for p in pairs if p not in memo))
    memo.update(zip(todo, encode_pairs(tokenizer, todo), strict=True))
    return [memo[p] for p in pairs]


_HEAD_SPLITS: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def _head_splits(model, ids: torch.Tensor, attention: torch.Tensor) -> bool:
    """Whether the decoder followed by the output head gives the model's own logits (no softcap or scale between)."""
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
        if decoder is None or decoder is model or head is None:
            return False
        full = model(input_ids=ids, attention_mask=attention, use_cache=False).logits.float()
        split = head(decoder(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state).float()
    except (AttributeError, TypeError, NotImplementedError):
        return False
    tolerance = max(1e-3, 4 * torch.finfo(full.dtype if full.is_floating_point() else torch.float32).eps)
    return split.shape == full.shape and torch.allclose(split, full, rtol=tolerance, atol=tolerance)


def _logits_at(model, ids: torch.Tensor, attention: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor):
    """The model's logits at the (row, position) pairs; the output head runs on those positions only when it may."""
    if model not in _HEAD_SPLITS:
        _HEAD_SPLITS[model] = _head_splits(model, ids[:4], attention[:4])
    if not _HEAD_SPLITS[model]:
        return model(input_ids=ids, attention_mask=attention, use_cache=False).logits[rows, positions]
    hidden = model.get_decoder()(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
    return model.get_output_embeddings()(hidden[rows, positions])


@torch.no_grad()
def teacher_forced(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    max_rows: int = MAX_BATCH_ROWS,
    max_tokens: int = MAX_BATCH_TOKENS,
    moments: bool = False,
) -> list[TokenStats]:
    """Token statistics of each answer given its prompt, from right-padded, length-bucketed batches.

    ``moments`` adds the mean and variance of log p over the vocabulary at each
    answer token (a few passes over the vocabulary per token: only Min-K%++ needs them).
    """
    encoded = _encoded(tokenizer, pairs)
    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    results: list[TokenStats | None] = [None] * len(encoded)
    for bucket in length_buckets([len(e.input_ids) for e in encoded], max_rows, max_tokens):
        width = max(len(encoded[i].input_ids) for i in bucket)
        ids = torch.full((len(bucket), width), pad, dtype=torch.long)
        attention = torch.zeros((len(bucket), width), dtype=torch.long)
        answer = torch.zeros((len(bucket), width), dtype=torch.bool)
        for row, i in enumerate(bucket):
            n = len(encoded[i].input_ids)
            ids[row, :n] = torch.tensor(encoded[i].input_ids)
            attention[row, :n] = 1
            answer[row, :n] = torch.tensor(encoded[i].answer_mask, dtype=torch.bool)
        rows, positions = torch.nonzero(answer[:, 1:], as_tuple=True)  # logits at t predict token t+1
        targets = ids[rows, positions + 1]
        logits = _logits_at(model, ids.to(device), attention.to(device), rows.to(device), positions.to(device))
        logp = torch.log_softmax(logits.float(), dim=-1)  # every answer token
        token_logp = logp.gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1).cpu().double().numpy()
        mean = var = None
        if moments:
            probs = logp.exp()
            mean_t = (probs * logp).sum(-1)
            var_t = (probs * (logp - mean_t.unsqueeze(-1)).square()).sum(-1).clamp(min=0)
            mean, var = (t.cpu().double().numpy() for t in (mean_t, var_t))
        target_ids = targets.numpy()
        ends = np.cumsum(torch.bincount(rows, minlength=len(bucket)).numpy())  # rows come out in order
        for row, i in enumerate(bucket):
            part = slice(ends[row - 1] if row else 0, ends[row])
            results[i] = TokenStats(
                target_ids[part],
                token_logp[part],
                None if mean is None else mean[part],
                None if var is None else var[part],
            )
    return results  # type: ignore[return-value]


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for marker in stop:
        found = text.find(marker)
        if found != -1:
            cut = min(cut, found)
    return text[:cut]


def stop_token_ids(tokenizer, stop: Sequence[str]) -> torch.Tensor:
    """Ids of the tokens whose text contains one of ``stop``."""
    if not stop:
        return torch.zeros(0, dtype=torch.long)
    ids = [i for i in range(len(tokenizer)) if any(m in tokenizer.decode([i]) for m in stop)]
    return torch.tensor(ids, dtype=torch.long)


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def _left_padded(encoded: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask with every prompt ending at the last column."""
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, width - len(tokens) :] = torch.tensor(tokens)
        attention[row, width - len(tokens) :] = 1
    return ids, attention


def _greedy_tokens(model, ids: torch.Tensor, attention: torch.Tensor, max_new_tokens: int, stop_ids: torch.Tensor):
    """New token ids per row: greedy decoding with a KV cache; a row leaves the batch at a stop token.

    A row ends after emitting EOS or a token of ``stop_ids`` (kept in its
    output); finished rows are dropped from the batch and the cache, so the
    remaining rows run alone.
    """
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    out = model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True, **extra)
    cache, last = out.past_key_values, positions[:, -1:]
    next_ids = out.logits[:, -1].argmax(-1)
    alive = torch.arange(len(ids), device=ids.device)  # which input row each decoding row is
    tokens: list[list[int]] = [[] for _ in range(len(ids))]
    done = [False] * len(ids)
    for step in range(max_new_tokens):
        finished = torch.isin(next_ids, stop_ids)
        for row, token, stops in zip(alive.tolist(), next_ids.tolist(), finished.tolist(), strict=True):
            if not done[row]:
                tokens[row].append(token)
                done[row] = stops
        if step == max_new_tokens - 1 or all(done):
            break
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
            past_key_values=cache,
            use_cache=True,
        )
        cache, next_ids = out.past_key_values, out.logits[:, -1].argmax(-1)
    return tokens


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
    stops = stop_token_ids(tokenizer, stop) if stop_ids is None else stop_ids
    if tokenizer.eos_token_id is not None:
        stops = torch.cat([stops, torch.tensor([tokenizer.eos_token_id])])
    stops = stops.to(device)
    outputs: list[str] = [""] * len(prompts)
    for bucket in length_buckets([len(e) for e in encoded], max_rows, max_tokens, extra=max_new_tokens):
        ids, attention = _left_padded([encoded[i] for i in bucket], pad_token_id(tokenizer))
        new_tokens = _greedy_tokens(model, ids.to(device), attention.to(device), max_new_tokens, stops)
        for i, tokens in zip(bucket, new_tokens, strict=True):
            outputs[i] = _cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), stop)
    return outputs


class ScoringModel:
    """The narrow, memoized interface probes use to question one model."""

    def __init__(self, loaded, max_rows: int = MAX_BATCH_ROWS, max_tokens: int = MAX_BATCH_TOKENS):
        self.loaded = loaded
        self.max_rows, self.max_tokens = max_rows, max_tokens
        self._stop_ids: dict[tuple[str, ...], torch.Tensor] = {}
        self._stats: dict[tuple[str, str], TokenStats] = {}
        self._texts: dict[tuple[str, int, tuple[str, ...]], str] = {}
        self.sequences_scored = 0  # unique teacher-forced sequences run, for tests and benchmarks
        self.prompts_generated = 0

    def token_stats(
        self, pairs: Sequence[tuple[str, str]], groups: Sequence[str] | None = None, moments: bool = False
    ) -> list[TokenStats]:
        """Teacher-forced statistics of each (prompt, answer); ``groups`` only matter when routed."""
        todo = list(
            dict.fromkeys(p for p in pairs if p not in self._stats or (moments and not self._stats[p].has_moments))
        )
        if todo:
            model, tokenizer = self.loaded.model, self.loaded.tokenizer
            stats = teacher_forced(model, tokenizer, todo, self.max_rows, self.max_tokens, moments)
            self._stats.update(zip(todo, stats, strict=True))
            self.sequences_scored += len(todo)
        return [self._stats[p] for p in pairs]

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        stop: Sequence[str] = ("\n",),
        groups: Sequence[str] | None = None,
    ) -> list[str]:
        """Greedy continuations of each prompt (memoized)."""
        keys = [(p, max_new_tokens, tuple(stop)) for p in prompts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._texts))
        if todo:
            tokenizer = self.loaded.tokenizer
            if tuple(stop) not in self._stop_ids:
                self._stop_ids[tuple(stop)] = stop_token_ids(tokenizer, stop)
            texts = greedy_generate(
                self.loaded.model,
                tokenizer,
                [k[0] for k in todo],
                max_new_tokens,
                stop,
                self.max_rows,
                self.max_tokens,
                self._stop_ids[tuple(stop)],
            )
            self._texts.update(zip(todo, texts, strict=True))
            self.prompts_generated += len(todo)
        return [self._texts[k] for k in keys]


class RoutedScoringModel:
    """Several attacked models; each request goes to the first one that never trained on its subject.

    A request whose subject every model trained on gets ``None``: it cannot be
    scored without leaking the answer to the attacker.
    """

    def __init__(self, variants: Sequence[tuple[ScoringModel, frozenset[str]]]):
        self.variants = list(variants)

    def _route(self, groups: Sequence[str] | None, n: int) -> list[int | None]:
        if groups is None:
            groups = [None] * n  # type: ignore[list-item]
        routes = []
        for group in groups:
            routes.append(next((v for v, (_, seen) in enumerate(self.variants) if group not in seen), None))
        return routes

    def _dispatch(self, requests: list, groups, call) -> list:
        routes = self._route(groups, len(requests))
        results: list = [None] * len(requests)
        for v, (scorer, _) in enumerate(self.variants):
            picked = [i for i, route in enumerate(routes) if route == v]
            if picked:
                for i, value in zip(picked, call(scorer, [requests[i] for i in picked]), strict=True):
                    results[i] = value
        return results

    def token_stats(self, pairs, groups=None, moments: bool = False) -> list[TokenStats | None]:
        return self._dispatch(list(pairs), groups, lambda s, reqs: s.token_stats(reqs, moments=moments))

    def generate(self, prompts, max_new_tokens: int = 32, stop=("\n",), groups=None) -> list[str | None]:
        return self._dispatch(list(prompts), groups, lambda s, reqs: s.generate(reqs, max_new_tokens, stop))

    @property
    def sequences_scored(self) -> int:
        return sum(s.sequences_scored for s, _ in self.variants)
