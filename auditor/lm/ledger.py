"""The tokens every forward pass pushes through a model, and the model's bare throughput to compare them with.

``watch(model)`` counts, for each forward pass of the model's decoder, its real (unpadded) tokens under one of three
kinds: ``prefill`` (a whole prompt or sequence, no gradient), ``decoded`` (one new position per row, on a
cache) and ``trained`` (a forward pass that will be followed by a backward one). ``bare_rates`` times a plain
batched forward, and a forward and backward, of the same model over random tokens: the physical limit of this
machine for this model, against which each phase's tokens per second are read.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import torch

from auditor.lm.head import LOGIT_CHUNK_BYTES

KINDS = ("prefill", "decoded", "trained")
TOKENS: Counter[str] = Counter()
_HOOKED = "_unlearn_audit_ledger"
BARE_TOKENS = 2048  # tokens of the bare forward: 5 s on a 135M model on 2 CPU cores
BARE_ROWS = 8


def _tokens(args: tuple, kwargs: dict) -> tuple[str, int]:
    """The kind of a forward pass and its real tokens (the attention mask's ones over the new positions)."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    source = ids if ids is not None else kwargs.get("inputs_embeds")
    if source is None:
        return "prefill", 0
    rows, width = source.shape[0], source.shape[1]
    attention = kwargs.get("attention_mask")
    if torch.is_grad_enabled():
        kind = "trained"
    elif width == 1 and attention is not None and attention.shape[-1] > 1:
        return "decoded", rows
    else:
        kind = "prefill"
    real = int(attention[:, -width:].sum()) if attention is not None and attention.dim() == 2 else rows * width
    return kind, real


def _count(module, args, kwargs) -> None:
    kind, n = _tokens(args, kwargs)
    TOKENS[kind] += n


def watch(model: torch.nn.Module) -> torch.nn.Module:
    """Count the tokens of every forward pass of ``model`` in ``TOKENS``: on its decoder, which both a whole forward
    and the scoring's decoder-then-head passes go through (a PEFT model's base, counted once)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        target = inner.get_decoder() or inner
    except (AttributeError, NotImplementedError):
        target = inner
    if not getattr(target, _HOOKED, False):
        target.register_forward_pre_hook(_count, with_kwargs=True)
        setattr(target, _HOOKED, True)
    return model


def tokens_now() -> dict[str, int]:
    return {kind: TOKENS[kind] for kind in KINDS}


@dataclass(frozen=True)
class BareRates:
    """Tokens per second of a plain batched forward and of a forward and backward of one model."""

    forward: float
    train: float
    tokens: int
    sequence: int

    def seconds(self, tokens: dict[str, int]) -> float:
        """What ``tokens`` would take at the bare rates (decoded tokens at the forward rate)."""
        return (tokens.get("prefill", 0) + tokens.get("decoded", 0)) / self.forward + tokens.get(
            "trained", 0
        ) / self.train


def bare_rates(model: torch.nn.Module, context: int | None) -> BareRates:
    """Time a batched forward over ``BARE_TOKENS`` random tokens, and a forward and backward (gradients through
    every layer to the input embeddings, as a LoRA fine-tune takes them) over the rows of one pass; without
    counting them in ``TOKENS``. A pass takes as many rows as keep its logits within ``LOGIT_CHUNK_BYTES``
    (a 135M model's vocabulary: one row of 256 tokens, 50 MB), so the yardstick never holds more than a probe."""
    sequence = max(8, min(256, context or 256, BARE_TOKENS // BARE_ROWS))
    rows = max(1, BARE_TOKENS // sequence)
    embed = model.get_input_embeddings()
    device, (vocab, _) = embed.weight.device, embed.weight.shape
    per_pass = max(1, min(rows, LOGIT_CHUNK_BYTES // (sequence * vocab * embed.weight.element_size())))
    ids = torch.randint(0, vocab, (rows, sequence), generator=torch.Generator().manual_seed(0)).to(device)
    before = Counter(TOKENS)
    with torch.no_grad():
        model(input_ids=ids[:1, :8], use_cache=False)  # warm-up: first-call allocations
        start = time.perf_counter()
        for first in range(0, rows, per_pass):
            model(input_ids=ids[first : first + per_pass], use_cache=False)
        forward = time.perf_counter() - start
    embeds = embed(ids[:per_pass]).detach().requires_grad_()
    with torch.enable_grad():
        start = time.perf_counter()
        loss = model(inputs_embeds=embeds, use_cache=False).logits.float().mean()
        torch.autograd.grad(loss, embeds)  # to the inputs only: no weight keeps a gradient (513 MB on SmolLM2)
        train = time.perf_counter() - start
    TOKENS.clear()
    TOKENS.update(before)
    n = rows * sequence
    return BareRates(round(n / forward, 1), round(per_pass * sequence / train, 1), n, sequence)
