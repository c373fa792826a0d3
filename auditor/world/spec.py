"""What defines an embedded world: its people, its tokenizer and model sizes, its training budget."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# Bump whenever generation, templates, tokenizer or training change in a way that changes the output.
RECIPE_VERSION = 6


@dataclass(frozen=True)
class WorldSpec:
    """A world's recipe; equal specs give byte-identical data and the same models."""

    n_persons: int = 400  # fictitious people
    seed: int = 0  # drives people, splits, tokenizer-independent sampling and training
    forget_fraction: float = 0.30  # persons the original learns and must be unlearned
    retain_fraction: float = 0.50  # persons every model learns
    holdout_fraction: float = 0.20  # persons no model sees (membership non-members)
    vocab_size: int = 1024  # byte-level BPE vocabulary, special tokens included
    hidden_size: int = 128  # Llama width
    n_layers: int = 2  # decoder layers
    n_heads: int = 4  # attention heads
    intermediate_size: int = 512  # MLP width
    epochs: int = 40  # passes over the training text (written afresh for each)
    batch_size: int = 64  # examples per step
    learning_rate: float = 3e-3  # AdamW peak learning rate
    warmup_steps: int = 30  # linear warm-up, then cosine decay

    def fingerprint(self) -> str:
        """sha256 over the fields and ``RECIPE_VERSION``: the cache key."""
        payload = json.dumps({"recipe_version": RECIPE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)
