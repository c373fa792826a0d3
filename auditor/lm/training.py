"""One fine-tune loop, shared by the world recipe, relearning attacks and unlearning methods.

A run draws, at every step, one batch from each named stream of examples
(``{"forget": [...], "retain": [...]}``) and hands the batches to a loss
function; methods differ only in that function (open-unlearning's "one loop,
many losses"). LoRA goes through ``peft``; full fine-tuning is the same loop.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from auditor.lm.ledger import watch
from auditor.lm.losses import default_loss
from auditor.lm.memory import free_memory_of_large
from auditor.lm.rollback import Rollback
from auditor.lm.sampling import Batch, StreamSampler
from auditor.lm.tokens import encode_pair, encode_spans, pad_token_id

LLAMA_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Example:
    """A training example: loss on ``completion`` (+EOS); an empty prompt trains the whole text.

    ``spans`` (character ranges of ``completion``), when given, limit the loss to
    those ranges (+EOS): several answers packed in one sequence.
    """

    prompt: str
    completion: str
    spans: tuple[tuple[int, int], ...] = ()


@dataclass
class TrainConfig:
    """Budget and optimiser settings of one fine-tune."""

    steps: int = 50  # optimiser steps
    learning_rate: float = 1e-3
    batch_size: int = 16  # examples per stream per step
    lora: bool = True  # LoRA adapter (merged at the end) or full fine-tuning
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] | str = LLAMA_LINEAR_MODULES  # or "all-linear"
    merge_lora: bool = True  # merge the adapter into the weights when done
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"  # "constant" | "linear" | "cosine" (after warm-up)
    max_grad_norm: float = 1.0
    seed: int = 0
    group_by_length: bool = False  # batch examples of similar length together (less padding, same epochs)
    check_every: int = 1  # steps between two stop checks (where a back-off returns to)
    max_backoffs: int = 0  # times a stop check may undo the steps since its last pass and halve the learning rate
    checkpointing: bool = False  # recompute each layer's activations in the backward pass (memory for time)


@dataclass
class TrainReport:
    """What a fine-tune cost and left behind."""

    model: torch.nn.Module
    steps: int
    examples_seen: dict[str, int]
    seconds: float
    losses: list[float] = field(default_factory=list)
    stop_reason: str = "step budget used"
    backoffs: int = 0  # learning-rate halvings, each after undoing the steps since the last passing check

    @property
    def cost(self) -> dict:
        return {
            "steps": self.steps,
            "examples": self.examples_seen,
            "seconds": round(self.seconds, 3),
            "stop_reason": self.stop_reason,
            "backoffs": self.backoffs,
        }


LossFn = Callable[[torch.nn.Module, Mapping[str, Batch]], torch.Tensor]
AfterStep = Callable[[torch.nn.Module, int], None]
# (model, steps done) -> why to stop now, or None; asked every ``TrainConfig.check_every`` steps, in eval mode
StopCheck = Callable[[torch.nn.Module, int], str | None]


def encode_examples(tokenizer, examples: Sequence[Example]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Tokenize examples once, marking completion tokens plus EOS (see ``auditor.lm.tokens``)."""
    out = []
    for ex in examples:
        if ex.spans:
            offset = len(ex.prompt)
            spans = [(offset + a, offset + b) for a, b in ex.spans]
            pair = encode_spans(tokenizer, ex.prompt + ex.completion, spans, add_eos=True)
        else:
            pair = encode_pair(tokenizer, ex.prompt, ex.completion, add_eos=True)
        out.append((pair.input_ids, pair.answer_mask))
    return out


def _schedule(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        span = max(1, config.steps - config.warmup_steps)
        done = (step - config.warmup_steps) / span
        if config.schedule == "linear":
            return max(0.0, 1.0 - done)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + torch.cos(torch.tensor(done * torch.pi)).item())
        return 1.0

    return factor


def _wrap_lora(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = config.lora_targets if isinstance(config.lora_targets, str) else list(config.lora_targets)
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=targets, lora_dropout=0.0)
    return get_peft_model(model, lora)


def train(
    model: torch.nn.Module,
    tokenizer,
    streams: Mapping[str, Sequence[Example]],
    config: TrainConfig,
    loss_fn: LossFn = default_loss,
    after_step: AfterStep | None = None,
    trainable: Callable[[str, torch.nn.Parameter], bool] | None = None,
    progress: bool = False,
    stop: StopCheck | None = None,
) -> TrainReport:
    """Fine-tune ``model`` for at most ``config.steps`` steps and report the cost.

    With ``config.lora`` the returned model has the adapter merged (unless
    ``merge_lora`` is off, then it is the ``peft`` model). ``trainable`` filters
    parameters in full fine-tuning; ``after_step`` runs after each optimiser step
    (e.g. a projection); ``stop`` after that, and a reason it returns ends the run,
    unless it is a ``BackOff`` and back-offs are left.
    """
    torch.manual_seed(config.seed)
    samplers = _samplers(tokenizer, streams, config)
    model, params = _trainable(watch(model), config, trainable)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    pad_id, device = pad_token_id(tokenizer), next(model.parameters()).device
    seen = dict.fromkeys(streams, 0)
    losses: list[float] = []
    stop_reason, done = "step budget used", 0
    rollback = Rollback(params, optimizer, scheduler, config) if config.max_backoffs else None
    was_training = model.training
    model.train()
    start = time.perf_counter()
    for step in _steps(config.steps, progress):
        batches = {name: s.next_batch(pad_id).to(device) for name, s in samplers.items()}
        for name, batch in batches.items():
            seen[name] += batch.input_ids.size(0)
        losses.append(_optimiser_step(model, loss_fn(model, batches), params, optimizer, scheduler, config))
        done = step + 1
        if after_step is not None:
            with torch.no_grad():
                after_step(model, step)
        if stop is None or done % config.check_every:
            continue
        reason = _check_stop(stop, model, done)
        reason = rollback.after_check(reason) if rollback is not None else reason
        if reason:
            stop_reason = reason
            break
    backoffs = rollback.count if rollback is not None else 0
    model = _finish(model, config, was_training)
    report = TrainReport(model, done, seen, time.perf_counter() - start, losses, stop_reason, backoffs)
    del optimizer, scheduler, rollback
    free_memory_of_large(model)  # the run's graphs and optimiser state, held in reference cycles
    return report


def _finish(model: torch.nn.Module, config: TrainConfig, was_training: bool) -> torch.nn.Module:
    """The trained model back in its former mode, its adapter merged (unless ``merge_lora`` is off), all trainable."""
    model.train(was_training)
    if config.checkpointing:
        _recompute_activations(model, False)
    if config.lora and config.merge_lora:
        model = model.merge_and_unload()
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def _samplers(tokenizer, streams: Mapping[str, Sequence[Example]], config: TrainConfig) -> dict[str, StreamSampler]:
    """One seeded sampler per stream; an empty stream is an error."""
    empty = [name for name, examples in streams.items() if not examples]
    if empty:
        raise ValueError(f"empty training stream(s): {', '.join(empty)}")
    rng = random.Random(config.seed)
    return {
        name: StreamSampler(
            encode_examples(tokenizer, examples), config.batch_size, random.Random(rng.random()), config.group_by_length
        )
        for name, examples in streams.items()
    }


def _trainable(
    model: torch.nn.Module, config: TrainConfig, trainable: Callable[[str, torch.nn.Parameter], bool] | None
) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    """The model to step (wrapped in a LoRA adapter, or with ``trainable`` choosing parameters; recomputing its
    activations with ``checkpointing``) and its parameters."""
    if config.lora:
        model = _wrap_lora(model, config)
    else:
        for name, param in model.named_parameters():
            param.requires_grad_(trainable is None or trainable(name, param))
    if config.checkpointing:
        _recompute_activations(model, True)
    return model, [p for p in model.parameters() if p.requires_grad]


def _recompute_activations(model: torch.nn.Module, on: bool) -> None:
    """Activation checkpointing on (non-reentrant: frozen embeddings need no input gradients) or off, by the
    names of the installed transformers (``gradient_checkpointing_*`` before 5.x, deprecated since and gone in v6)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_disable()


def _steps(n: int, progress: bool):
    if not progress:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc="fine-tune", leave=False)


def _optimiser_step(model, loss: torch.Tensor, params, optimizer, scheduler, config: TrainConfig) -> float:
    """Back-propagate ``loss``, clip, step; the loss as a float."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def _check_stop(stop: StopCheck, model: torch.nn.Module, done: int) -> str | None:
    """Ask ``stop`` about the model in eval mode (LoRA layers active), then return to training. The loop asks only
    when a check is due: each switch of a transformers model's mode re-walks its modules."""
    model.eval()
    try:
        with torch.no_grad():
            return stop(model, done)
    finally:
        model.train()
