"""Models whose context is shorter than the audit's prompts: prompts fit, or the item is unscored; never a crash."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from auditor.campaign.demo import world_data
from auditor.lm.models import LoadedModel, load_model
from auditor.lm.scoring import ScoringModel, context_length
from auditor.plugins import RunContext
from auditor.registry import PROBES
from auditor.types import ModelSpec

CONTEXT = 64  # the world's QA prompts (about 20 tokens) fit with their answer budget; four shots before them do not


@pytest.fixture(scope="module")
def data(world):
    return world_data(world)


@pytest.fixture(scope="module")
def short_llama(world) -> LoadedModel:
    """The world's original, declaring a 64-token context (rotary positions: it would run past it silently)."""
    loaded = load_model(ModelSpec(str(world.original)))
    loaded.model.config.max_position_embeddings = CONTEXT
    return loaded


@pytest.fixture(scope="module")
def short_gpt2(world) -> LoadedModel:
    """Learned positions: 48 of them, and an index error past the last one, as the GPT-Neo of the issue."""
    tokenizer = AutoTokenizer.from_pretrained(world.original)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=48, n_embd=32, n_layer=1, n_head=2)
    config.pad_token_id, config.eos_token_id, config.bos_token_id = (
        tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id
    )  # fmt: skip
    return LoadedModel(GPT2LMHeadModel(config).eval(), tokenizer, "gpt2-48", ModelSpec("gpt2-48"))


def run(probe: str, loaded: LoadedModel, data):
    return PROBES.get(probe)().run(ScoringModel(loaded), RunContext(data=data), "short")


def test_context_length_comes_from_the_config(short_llama, short_gpt2):
    assert context_length(short_llama.model, short_llama.tokenizer) == CONTEXT
    assert context_length(short_gpt2.model, short_gpt2.tokenizer) == 48


def test_in_context_prompts_drop_shots_until_they_fit(short_llama, data):
    result = run("in-context", short_llama, data)
    scorer = ScoringModel(short_llama)
    scored = [s for s in result.items if s.score is not None]
    assert result.extras["shots_dropped"] > 0 and scored
    for item in scored:
        assert scorer.token_counts([item.detail["prompt"]])[0] + 32 <= CONTEXT
        assert 4 - item.detail["shots_dropped"] == len(item.detail["context_items"])
    full = run("in-context", load_model(ModelSpec(short_llama.spec.path)), data)
    assert full.extras["shots_dropped"] == 0  # the world's own 256 tokens hold four shots


@pytest.mark.parametrize("probe", ["qa", "in-context", "in-context-relearn", "verbatim", "mia"])
def test_a_short_learned_position_model_never_crashes(short_gpt2, data, probe):
    """Each item is scored, or unscored for want of context: never a crash, and never all of them (the verbatim
    probe shortens a passage's prefix to leave room for its continuation)."""
    result = run(probe, short_gpt2, data)
    unscored = [s for s in result.items if s.score is None]
    assert result.status == "ok" and len(unscored) < len(result.items), result
    assert all("context" in s.detail.get("unscored", "") for s in unscored), unscored[:2]
