"""Shared fixtures: the embedded world, and the one factory of random tiny Llama models."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from auditor.world import World, build_world

TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}


def tiny_llama(tokenizer, seed: int = 0, **config) -> LlamaForCausalLM:
    """A random tiny Llama over ``tokenizer``'s vocabulary and special tokens; ``config`` overrides its fields."""
    fields = {**TINY_LLAMA, **config}
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(seed)
    return LlamaForCausalLM(
        LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **special, **fields)
    )


@pytest.fixture(scope="session")
def make_tiny_llama():
    """``tiny_llama``, for module-scoped fixtures."""
    return tiny_llama


@pytest.fixture(scope="session")
def world() -> World:
    """The default embedded world and its seed-1 retrain, built once into ``$UNLEARN_AUDIT_CACHE`` and reused."""
    return build_world(progress=print, retrains=(1,))


def pytest_collection_modifyitems(items):
    """A test that uses the embedded world (directly or through a fixture) is slow: ``make test-fast`` skips it."""
    for item in items:
        if "world" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
