"""Teacher-forced token statistics of answers after prompts, batched by length, with the model's own logits.

Which tokens count is defined once in ``auditor.lm.tokens``.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from auditor.lm.head import chunked_logprobs, states_at
from auditor.lm.tokens import EncodedPair, encode_pairs, pad_token_id


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


def padded_batch(encoded: Sequence[EncodedPair], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and answer mask of ``encoded``, one row each."""
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    answer = torch.zeros((len(encoded), width), dtype=torch.bool)
    for row, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        attention[row, :n] = 1
        answer[row, :n] = torch.tensor(e.answer_mask, dtype=torch.bool)
    return ids, attention, answer


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
        ids, attention, answer = padded_batch([encoded[i] for i in bucket], pad)
        rows, positions = torch.nonzero(answer[:, 1:], as_tuple=True)  # logits at t predict token t+1
        targets = ids[rows, positions + 1]
        inputs = {"input_ids": ids.to(device), "attention_mask": attention.to(device), "use_cache": False}
        states, head = states_at(model, rows.to(device), positions.to(device), **inputs)
        logp_t, mean_t, var_t = chunked_logprobs(model, states, head, targets.to(device), moments)
        token_logp = logp_t.cpu().double().numpy()
        mean, var = (None if t is None else t.cpu().double().numpy() for t in (mean_t, var_t))
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
    return results


UNLIMITED_TOKENIZER_LENGTH = 1_000_000  # tokenizers without a limit store a huge sentinel as model_max_length


def context_length(model, tokenizer) -> int | None:
    """The most tokens the model attends to: its config's position limit, else its tokenizer's (when one is set)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < UNLIMITED_TOKENIZER_LENGTH else None
