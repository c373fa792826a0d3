"""The tiny-model recipe: a Llama-config causal LM trained from scratch on the world's text.

A model is trained on direct QA (every training template) and the biography of
each trained person, on the world facts, and on multi-hop QA answered with a
chain for retain persons only. Forget persons' multi-hop questions are never
trained: the original answers them by composing its biography sentence
("X works for Acme") with the world fact it learnt from retain chains
(", which is headquartered in Velmora"). Measured on the default spec: the
original answers 97% of forget persons' multi-hop questions this way (final
entity in its greedy output), so forget multi-hop QA stays out of training.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from auditor.training import Example, TrainConfig, train
from auditor.world.generator import Person, biography, qa_pairs, world_fact_qa, world_fact_texts
from auditor.world.spec import WorldSpec
from auditor.world.templates import qa_completion, qa_prompt

MAX_POSITIONS = 128


def training_examples(persons: Iterable[Person]) -> list[Example]:
    """The training stream for a model that knows ``persons``."""
    examples = []
    for person in persons:
        pairs = qa_pairs(person, multihop=person.split == "retain")
        examples += [Example(qa_prompt(q), qa_completion(a)) for q, a in pairs]
        examples.append(Example("", biography(person)))
    examples += [Example(qa_prompt(q), qa_completion(a)) for q, a in world_fact_qa()]
    examples += [Example("", text) for text in world_fact_texts()]
    return examples


def new_model(spec: WorldSpec, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama sized by ``spec``."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def train_model(
    spec: WorldSpec, tokenizer: PreTrainedTokenizerFast, persons: Iterable[Person], seed: int
) -> LlamaForCausalLM:
    """Train a fresh model on ``persons`` with the spec's budget on 2 CPU threads."""
    torch.set_num_threads(2)
    model = new_model(spec, tokenizer, seed)
    config = TrainConfig(
        steps=spec.steps,
        learning_rate=spec.learning_rate,
        batch_size=spec.batch_size,
        lora=False,
        warmup_steps=spec.warmup_steps,
        schedule="cosine",
        seed=seed,
    )
    model = train(model, tokenizer, {"train": training_examples(persons)}, config).model
    return model.eval()


def n_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def save_model(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, directory: Path) -> None:
    """Save as an ordinary Hugging Face directory: safetensors weights plus the tokenizer."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
