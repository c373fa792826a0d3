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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from auditor.tokens import encode_pairs
from auditor.training import pad_token_id


@dataclass(frozen=True)
class TokenStats:
    """Per answer token: its log-probability, and the mean and variance of log p under the model.

    ``mean_logprob`` and ``var_logprob`` are E[log p(z)] and Var[log p(z)] for z drawn
    from the model's own next-token distribution at that position (Min-K%++ needs them).
    """

    token_ids: np.ndarray
    logprobs: np.ndarray
    mean_logprob: np.ndarray
    var_logprob: np.ndarray

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


def _length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length and cut into batches, so a batch pads little."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def teacher_forced(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[TokenStats]:
    """Token statistics of each answer given its prompt, from right-padded, length-bucketed batches."""
    encoded = encode_pairs(tokenizer, pairs)
    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    results: list[TokenStats | None] = [None] * len(encoded)
    for bucket in _length_buckets([len(e.input_ids) for e in encoded], batch_size):
        width = max(len(encoded[i].input_ids) for i in bucket)
        ids = torch.full((len(bucket), width), pad, dtype=torch.long)
        attention = torch.zeros((len(bucket), width), dtype=torch.long)
        answer = torch.zeros((len(bucket), width), dtype=torch.bool)
        for row, i in enumerate(bucket):
            n = len(encoded[i].input_ids)
            ids[row, :n] = torch.tensor(encoded[i].input_ids)
            attention[row, :n] = 1
            answer[row, :n] = torch.tensor(encoded[i].answer_mask, dtype=torch.bool)
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits
        rows, positions = torch.nonzero(answer[:, 1:], as_tuple=True)  # logits at t predict token t+1
        targets = ids[rows, positions + 1]
        logp = torch.log_softmax(logits[rows.to(device), positions.to(device)].float(), dim=-1)  # every answer token
        probs = logp.exp()
        mean = (probs * logp).sum(-1)
        var = (probs * (logp - mean.unsqueeze(-1)).square()).sum(-1).clamp(min=0)
        token_logp = logp.gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1)
        token_logp, mean, var = (t.cpu().double().numpy() for t in (token_logp, mean, var))
        target_ids = targets.numpy()
        ends = np.cumsum(torch.bincount(rows, minlength=len(bucket)).numpy())  # rows come out in order
        for row, i in enumerate(bucket):
            part = slice(ends[row - 1] if row else 0, ends[row])
            results[i] = TokenStats(target_ids[part], token_logp[part], mean[part], var[part])
    return results  # type: ignore[return-value]


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for marker in stop:
        found = text.find(marker)
        if found != -1:
            cut = min(cut, found)
    return text[:cut]


@torch.no_grad()
def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    stop: Sequence[str] = ("\n",),
    batch_size: int = 32,
) -> list[str]:
    """Greedy continuations of each prompt, cut at EOS or the first stop string."""
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    outputs: list[str] = [""] * len(prompts)
    for bucket in _length_buckets([len(e) for e in encoded], batch_size):
        width = max(len(encoded[i]) for i in bucket)
        ids = torch.full((len(bucket), width), pad, dtype=torch.long)
        attention = torch.zeros((len(bucket), width), dtype=torch.long)
        for row, i in enumerate(bucket):  # left padding: every prompt ends at the last column
            n = len(encoded[i])
            ids[row, width - n :] = torch.tensor(encoded[i])
            attention[row, width - n :] = 1
        generated = model.generate(
            input_ids=ids.to(device),
            attention_mask=attention.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row, i in enumerate(bucket):
            text = tokenizer.decode(generated[row, width:], skip_special_tokens=True)
            outputs[i] = _cut_at_stop(text, stop)
    return outputs


class ScoringModel:
    """The narrow, memoized interface probes use to question one model."""

    def __init__(self, loaded, batch_size: int = 32):
        self.loaded = loaded
        self.batch_size = batch_size
        self._stats: dict[tuple[str, str], TokenStats] = {}
        self._texts: dict[tuple[str, int, tuple[str, ...]], str] = {}
        self.sequences_scored = 0  # unique teacher-forced sequences run, for tests and benchmarks
        self.prompts_generated = 0

    def token_stats(self, pairs: Sequence[tuple[str, str]], groups: Sequence[str] | None = None) -> list[TokenStats]:
        """Teacher-forced statistics of each (prompt, answer); ``groups`` only matter when routed."""
        todo = list(dict.fromkeys(p for p in pairs if p not in self._stats))
        if todo:
            stats = teacher_forced(self.loaded.model, self.loaded.tokenizer, todo, self.batch_size)
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
            texts = greedy_generate(
                self.loaded.model,
                self.loaded.tokenizer,
                [k[0] for k in todo],
                max_new_tokens,
                stop,
                self.batch_size,
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

    def token_stats(self, pairs, groups=None) -> list[TokenStats | None]:
        return self._dispatch(list(pairs), groups, lambda s, reqs: s.token_stats(reqs))

    def generate(self, prompts, max_new_tokens: int = 32, stop=("\n",), groups=None) -> list[str | None]:
        return self._dispatch(list(prompts), groups, lambda s, reqs: s.generate(reqs, max_new_tokens, stop))

    @property
    def sequences_scored(self) -> int:
        return sum(s.sequences_scored for s, _ in self.variants)
