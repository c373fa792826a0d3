"""The automatic token cap of a scoring batch: small enough that its KV cache is a fraction of the model.

A generation batch keeps every layer's keys and values for all its tokens, and
on a deep, narrow model with a wide vocabulary that outgrows what a copy of
the weights suggests: SmolLM2-135M (30 layers, 3 key-value heads of 64) holds
46 KB per token in float32, so 8,192 tokens took 0.7 of its 513 MB copy. From
``memory.LARGE_MODEL`` parameters on, the cap keeps the cache to ``KV_SHARE`` of
the weights' bytes; a smaller model keeps ``MAX_BATCH_TOKENS`` (its cache is a
few MB, and larger batches are faster).
"""

from __future__ import annotations

from auditor.lm.memory import LARGE_MODEL
from auditor.lm.teacher_forcing import MAX_BATCH_TOKENS

KV_SHARE = 0.25  # of the weights' bytes: the most one automatic batch's KV cache takes
MIN_BATCH_TOKENS = 512  # however small the share, a batch takes this many tokens


def kv_bytes_per_token(model) -> int | None:
    """Bytes of keys and values one token adds to the cache, from the model's config; ``None`` if it does not say."""
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    hidden = getattr(config, "hidden_size", None)
    heads = getattr(config, "num_attention_heads", None)
    if not (layers and hidden and heads):
        return None
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    element = next(model.parameters()).element_size()
    return 2 * layers * kv_heads * head_dim * element


def automatic_token_cap(model) -> int:
    """Padded tokens per automatic batch for ``model`` (see the module's doc)."""
    parameters = list(model.parameters())
    per_token = kv_bytes_per_token(model)
    if per_token is None or sum(p.numel() for p in parameters) < LARGE_MODEL:
        return MAX_BATCH_TOKENS
    weight_bytes = sum(p.numel() * p.element_size() for p in parameters)
    return max(MIN_BATCH_TOKENS, min(MAX_BATCH_TOKENS, int(KV_SHARE * weight_bytes / per_token)))
