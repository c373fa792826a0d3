"""Logits at chosen positions only, and log-probabilities from them in chunks of bounded memory.

The output head's logits are the largest activation of a scoring pass: one
float32 row of a 49k vocabulary is 192 KB, so a batch's answer positions held at
once took over a gigabyte on a 135M model. The head runs on the scored
positions only, in the model's dtype, a chunk of ``LOGIT_CHUNK_BYTES`` at a
time; the softmax and the per-token reductions are float32.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

LOGIT_CHUNK_BYTES = 16 * 2**20  # float32 logits held at once while scoring (a few such arrays per chunk)
_FALLBACK_VOCAB = 1 << 16  # chunk sizing when the config gives no vocabulary size

_HEAD_SPLITS: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


@torch.no_grad()
def _head_splits(model, ids: torch.Tensor) -> bool:
    """Whether the decoder followed by the output head gives the model's own logits (no softcap or scale between)."""
    ids = ids[:4, :16]
    attention = torch.ones_like(ids)
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


def identity(logits: torch.Tensor) -> torch.Tensor:
    """The head of states that are already logits."""
    return logits


def states_at(model, rows: torch.Tensor, positions: torch.Tensor, **inputs) -> tuple[torch.Tensor, Callable]:
    """What gives the logits at the (row, position) pairs of a forward pass on ``inputs``: the last hidden states
    there and the output head, or, for a model whose head does not split off, the logits there and the identity."""
    if model not in _HEAD_SPLITS:
        _HEAD_SPLITS[model] = _head_splits(model, inputs["input_ids"])
    if not _HEAD_SPLITS[model]:
        return model(**inputs).logits[rows, positions], identity
    hidden = model.get_decoder()(**inputs).last_hidden_state
    return hidden[rows, positions], model.get_output_embeddings()


def logits_at(model, rows: torch.Tensor, positions: torch.Tensor, **inputs) -> torch.Tensor:
    """The model's logits at the (row, position) pairs, all at once (training needs them for its gradient)."""
    states, head = states_at(model, rows, positions, **inputs)
    return head(states)


def chunked_logprobs(
    model, states: torch.Tensor, head: Callable, targets: torch.Tensor, moments: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """log p of each target and, with ``moments``, the mean and variance of log p under the model's own
    next-token distribution at its position; the head runs on ``LOGIT_CHUNK_BYTES`` of logits at a time."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or _FALLBACK_VOCAB
    step = max(1, LOGIT_CHUNK_BYTES // (4 * vocab))
    token_logp, means, variances = [], [], []
    for start in range(0, len(states), step):
        logp = torch.log_softmax(head(states[start : start + step]).float(), dim=-1)
        token_logp.append(logp.gather(-1, targets[start : start + step].unsqueeze(-1)).squeeze(-1))
        if moments:
            probs = logp.exp()
            mean = (probs * logp).sum(-1)
            means.append(mean)
            variances.append((probs * (logp - mean.unsqueeze(-1)).square()).sum(-1).clamp(min=0))
    empty = states.new_zeros(0, dtype=torch.float32)
    joined = [torch.cat(parts) if parts else empty for parts in (token_logp, means, variances)]
    return joined[0], joined[1] if moments else None, joined[2] if moments else None
