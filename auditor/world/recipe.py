"""The tiny-model recipe: a Llama-config causal LM trained from scratch on the world's text.

The training text is written afresh for every epoch. For each person a model
knows it holds the biography, the notebook line and, per relation,
``QUESTIONS_PER_EPOCH`` questions drawn from the training templates. Questions
are packed into QA sessions of 1 to ``MAX_SESSION_PAIRS`` answered pairs
separated by a blank line, either about one person or about several people,
so few-shot and in-context prompts are a format the model knows; the loss
covers the answers of a session and every token of a biography or notebook.

Multi-hop questions are answered with a chain, for retain persons only. The
original answers a forget person's multi-hop question by composing its
biography sentence ("X works for Acme") with the world fact it learnt from
retain chains (", which is headquartered in Velmora").
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from auditor.lm.training import Batch, Example, TrainConfig, train
from auditor.world import templates as t
from auditor.world.generator import Person, biography, chain, notebook, world_fact_qa, world_fact_texts
from auditor.world.spec import WorldSpec
from auditor.world.templates import qa_completion, qa_prompt

MAX_POSITIONS = 256
QUESTIONS_PER_EPOCH = 2  # training templates drawn per relation, person and epoch
MAX_SESSION_PAIRS = 4
SESSION_SEPARATOR = "\n\n"


def _qa_pair(question: str, answer: str) -> tuple[str, str]:
    """(prompt, completion) of an answered question."""
    return qa_prompt(question), qa_completion(answer)


def _person_pairs(rng: random.Random, person: Person) -> list[tuple[str, str]]:
    """One epoch's answered questions about a person."""
    pairs = [
        _qa_pair(q.format(name=person.name), person.fact(rel))
        for rel in t.RELATIONS
        for q in rng.sample(t.TRAIN_QUESTIONS[rel], QUESTIONS_PER_EPOCH)
    ]
    if person.split == "retain":
        pairs += [_qa_pair(q.format(name=person.name), chain(person, rel)) for rel, q in t.MULTIHOP_QUESTIONS.items()]
    return pairs


def session(pairs: list[tuple[str, str]]) -> Example:
    """Answered questions in one sequence, separated by a blank line; the loss covers the answers."""
    text, spans = "", []
    for prompt, answer in pairs:
        text += (SESSION_SEPARATOR if text else "") + prompt
        spans.append((len(text), len(text) + len(answer)))
        text += answer
    return Example("", text, tuple(spans))


def _sessions(rng: random.Random, pairs: list[tuple[str, str]]) -> list[Example]:
    """``pairs`` shuffled and cut into sessions of 1 to ``MAX_SESSION_PAIRS`` pairs."""
    rng.shuffle(pairs)
    sessions = []
    while pairs:
        size = rng.randint(1, MAX_SESSION_PAIRS)
        sessions.append(session(pairs[:size]))
        pairs = pairs[size:]
    return sessions


def epoch_examples(persons: list[Person], rng: random.Random) -> list[Example]:
    """One epoch: sessions about one person, sessions across people, biographies, notebooks, world facts."""
    own, mixed = [], [_qa_pair(q, a) for q, a in world_fact_qa()]
    for i, person in enumerate(persons):
        pairs = _person_pairs(rng, person)
        if i % 2:
            own += _sessions(rng, pairs)
        else:
            mixed += pairs
    texts = [*world_fact_texts(), *(text for p in persons for text in (biography(p), notebook(p)))]
    return own + _sessions(rng, mixed) + [Example("", text) for text in texts]


def training_examples(persons: Iterable[Person], seed: int = 0, epochs: int = 1) -> list[Example]:
    """The training stream, ``epochs`` epochs long, for a model that knows ``persons``."""
    persons = list(persons)
    rng = random.Random(f"{seed}:training-text")
    examples = []
    for _ in range(epochs):
        rng.shuffle(persons)  # who gets one-person sessions changes from epoch to epoch
        examples += epoch_examples(persons, rng)
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


def labelled_nll_loss(model: torch.nn.Module, batches: Mapping[str, Batch]) -> torch.Tensor:
    """``training.nll_loss`` with the output head run on the labelled positions only (most of a session is not)."""
    batch = batches["train"]
    hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    labels = batch.labels[:, 1:]
    labelled = labels != -100
    logits = model.lm_head(hidden.last_hidden_state[:, :-1][labelled])
    return F.cross_entropy(logits.float(), labels[labelled])


def train_model(
    spec: WorldSpec, tokenizer: PreTrainedTokenizerFast, persons: Iterable[Person], seed: int
) -> LlamaForCausalLM:
    """Train a fresh model on ``persons`` with the spec's budget on one CPU thread.

    One thread keeps the result independent of the machine's core count, and
    lets the world's models train side by side in separate processes.
    """
    torch.set_num_threads(1)
    model = new_model(spec, tokenizer, seed)
    examples = training_examples(persons, seed, spec.epochs)
    config = TrainConfig(
        steps=math.ceil(len(examples) / spec.batch_size),
        learning_rate=spec.learning_rate,
        batch_size=spec.batch_size,
        lora=False,
        warmup_steps=spec.warmup_steps,
        schedule="cosine",
        seed=seed,
        group_by_length=True,
    )
    model = train(model, tokenizer, {"train": examples}, config, loss_fn=labelled_nll_loss).model
    return model.eval()


def n_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def save_model(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, directory: Path) -> None:
    """Save as an ordinary Hugging Face directory: safetensors weights plus the tokenizer."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
