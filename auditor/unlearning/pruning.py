"""Selective pruning (Pochinkov & Schoots, 2024): zero the neurons far more active on forget data than on retain data.

No gradient steps. A neuron is an input dimension of each MLP's output
projection (``down_proj`` in Llama-like blocks, ``fc2`` in OPT-like ones),
found generically: a Linear mapping a wider dimension onto the hidden size,
together with its sibling Linears that produce that dimension (gate/up). With
``attention=true`` the input dimensions of each attention output projection
(value dimensions after mixing) are candidates too.

Score of a neuron: mean |activation| on forget data / (mean |activation| on
retain data + eps), over the positions that predict answer tokens (where a
fact is recalled; forget and retain questions share their templates, so the
other tokens say little), or over every token (``positions=all``, as the paper
does for datasets that differ in kind). In steps of
``step_fraction`` of all candidates, the highest-scoring live neurons are zeroed
(their column of the output projection, their rows and biases in the feeding
Linears) and scores recomputed, until the forget answers' mean token
probability has fallen by ``target_drop`` of its start, or the retain answers'
would fall by more than ``retain_budget`` (that last step is undone), or
``max_fraction`` is pruned.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from auditor.errors import UserError
from auditor.lm.models import LoadedModel, clone
from auditor.lm.sampling import collate
from auditor.lm.scoring import teacher_forced
from auditor.lm.tokens import pad_token_id
from auditor.lm.training import Example, encode_examples
from auditor.plugins import RunContext, UnlearningMethod, UnlearnOutcome
from auditor.types import ItemSet
from auditor.unlearning.base import examples, finish

PAPER = "Pochinkov & Schoots, 2024, Dissecting Language Models: Machine Unlearning via Selective Pruning"
EPS = 1e-6


@dataclass
class PruneTarget:
    """One block's candidate neurons: the input dimensions of ``output``, produced by ``feeders``."""

    name: str
    output: nn.Linear
    feeders: list[nn.Linear] = field(default_factory=list)

    @property
    def width(self) -> int:
        return self.output.in_features

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor that ``zero_neurons`` may change."""
        feeders = [t for f in self.feeders for t in (f.weight, f.bias) if t is not None]
        return [self.output.weight, *feeders]


def find_targets(model: nn.Module, attention: bool = False) -> list[PruneTarget]:
    """Each MLP's output projection (a Linear from a wider dimension onto the hidden size) and its feeders;
    with ``attention``, each attention block's output projection as well."""
    width = model.get_input_embeddings().embedding_dim
    targets = []
    for name, module in model.named_modules():
        linears = [child for child in module.children() if isinstance(child, nn.Linear)]
        outputs = [lin for lin in linears if lin.out_features == width and lin.in_features > width]
        for out in outputs:
            feeders = [lin for lin in linears if lin is not out and lin.out_features == out.in_features]
            targets.append(PruneTarget(f"{name}.mlp", out, feeders))
        is_attention = name.rsplit(".", 1)[-1] in ("self_attn", "attn", "attention", "self_attention")
        if attention and is_attention and linears and linears[-1].out_features == width:
            targets.append(PruneTarget(f"{name}.out", linears[-1]))
    if not any(t.name.endswith(".mlp") for t in targets):
        raise UserError("prune: found no MLP output projection (a Linear from a wider dimension to the hidden size)")
    return targets


def position_mask(attention_mask: torch.Tensor, labels: torch.Tensor, positions: str) -> torch.Tensor:
    """Which positions count: every non-padding token (``all``), or those that predict a labelled token (``answer``)."""
    if positions == "all":
        return attention_mask.double()
    mask = torch.zeros_like(labels, dtype=torch.float64)
    mask[:, :-1] = (labels[:, 1:] != -100).double()
    return mask


@torch.no_grad()
def activation_means(
    model: nn.Module,
    tokenizer,
    texts: list[Example],
    targets: list[PruneTarget],
    positions: str = "answer",
    batch_size: int = 32,
) -> list[torch.Tensor]:
    """Mean |input| of each target's output projection per input dimension, over the counted positions."""
    sums = [torch.zeros(t.width, dtype=torch.float64) for t in targets]
    count = 0
    mask_holder: dict[str, torch.Tensor] = {}

    def hook(index: int):
        def record(_module, inputs):
            x = inputs[0].detach().abs().double()
            sums[index] += (x * mask_holder["mask"].unsqueeze(-1)).sum(dim=(0, 1)).cpu()

        return record

    handles = [t.output.register_forward_pre_hook(hook(i)) for i, t in enumerate(targets)]
    device = next(model.parameters()).device
    encoded, pad = encode_examples(tokenizer, texts), pad_token_id(tokenizer)
    try:
        for start in range(0, len(encoded), batch_size):
            batch = collate(encoded[start : start + batch_size], pad).to(device)
            mask_holder["mask"] = position_mask(batch.attention_mask, batch.labels, positions)
            count += int(mask_holder["mask"].sum())
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        for handle in handles:
            handle.remove()
    return [s / max(count, 1) for s in sums]


def neuron_scores(forget_means: list[torch.Tensor], retain_means: list[torch.Tensor]) -> list[torch.Tensor]:
    """forget / (retain + eps) per neuron."""
    return [f / (r + EPS) for f, r in zip(forget_means, retain_means, strict=True)]


def pick_neurons(scores: list[torch.Tensor], pruned: list[torch.Tensor], n: int) -> list[tuple[int, int]]:
    """The ``n`` highest-scoring neurons not yet pruned, as (target index, neuron index)."""
    flat = torch.cat([torch.where(dead, torch.full_like(s, -1.0), s) for s, dead in zip(scores, pruned, strict=True)])
    offsets = np.cumsum([0] + [s.numel() for s in scores])
    live = int((torch.cat(pruned) == 0).sum())
    chosen = flat.topk(min(n, live)).indices.tolist()
    out = []
    for index in chosen:
        target = int(np.searchsorted(offsets, index, side="right") - 1)
        out.append((target, index - int(offsets[target])))
    return out


@torch.no_grad()
def zero_neurons(target: PruneTarget, indices: list[int]) -> None:
    """Remove neurons: zero their columns in the output projection and their rows (and biases) in the feeders."""
    idx = torch.tensor(indices, dtype=torch.long, device=target.output.weight.device)
    target.output.weight[:, idx] = 0
    for feeder in target.feeders:
        feeder.weight[idx, :] = 0
        if feeder.bias is not None:
            feeder.bias[idx] = 0


def answer_probability(model: nn.Module, tokenizer, pairs: list[tuple[str, str]]) -> float:
    """Mean over items of the geometric-mean probability of the answer tokens."""
    stats = teacher_forced(model, tokenizer, pairs)
    return float(np.mean([np.exp(s.mean) for s in stats if s.n_tokens]))


def _prune_most_specific(work, tok, examples_pair, targets, pruned, per_step: int, p: dict):
    """Zero the ``per_step`` neurons most specific to the forget examples; the neurons and the tensors' old values."""
    forget_ex, retain_ex = examples_pair
    scores = neuron_scores(
        activation_means(work, tok, forget_ex, targets, p["positions"]),
        activation_means(work, tok, retain_ex, targets, p["positions"]),
    )
    picked = pick_neurons(scores, pruned, per_step)
    saved = [(t, t.clone()) for i in {i for i, _ in picked} for t in targets[i].tensors()]
    for i in sorted({i for i, _ in picked}):
        zero_neurons(targets[i], [j for t, j in picked if t == i])
    return picked, saved


class SelectivePruning(UnlearningMethod):
    """Zero the neurons most specific to the forget set, in steps, within a retain budget.

    Defaults tuned on the embedded world (forget 1.00 -> 0.62, retain 1.00 -> 0.85, stopped by the
    retain budget): forget and retain persons share every template, and the tiny model's neurons
    are not person-specific, so forget and retain fall together; MLP neurons alone barely matter
    (30% pruned: forget 0.94), attention output dimensions do.
    """

    name = "prune"
    summary = "Selective pruning of neurons far more active on forget than on retain data (no gradient steps)."
    paper = PAPER
    defaults: ClassVar[dict[str, Any]] = {
        "step_fraction": 0.02,  # share of all candidate neurons zeroed per step
        "max_fraction": 0.6,  # stop after pruning this share
        "target_drop": 0.8,  # stop once the forget answer probability fell by this share of its start
        "retain_budget": 0.2,  # never let the retain answer probability fall by more than this share
        "attention": True,  # also prune attention output (value) dimensions
        "positions": "answer",  # answer: positions that predict answer tokens (+EOS); all: every token
        "max_items": 256,  # items per set used for activations and scores (seeded sample)
    }

    def validate(self) -> None:
        p = self.params
        for key in ("step_fraction", "max_fraction", "target_drop", "retain_budget"):
            if not 0 < p[key] <= 1:
                raise UserError(f"prune: {key} must be in (0, 1], got {p[key]}")
        if p["positions"] not in ("answer", "all"):
            raise UserError(f"prune: positions must be answer or all, got {p['positions']!r}")
        if p["max_items"] < 1:
            raise UserError("prune: max_items must be positive")

    def _sample(self, items: list, rng: random.Random) -> list:
        return items if len(items) <= self.params["max_items"] else rng.sample(items, self.params["max_items"])

    def unlearn(self, loaded: LoadedModel, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> UnlearnOutcome:
        start, p, tok = time.perf_counter(), self.params, loaded.tokenizer
        rng = random.Random(ctx.seed)
        forget_ex = self._sample(examples(forget, ctx, self.name), rng)
        retain_ex = self._sample(examples(retain, ctx, self.name), rng)
        work = clone(loaded).model.eval()
        targets = find_targets(work, p["attention"])
        total = sum(t.width for t in targets)
        pruned = [torch.zeros(t.width, dtype=torch.bool) for t in targets]
        per_step = max(1, round(p["step_fraction"] * total))

        def scores_now() -> tuple[float, float]:
            f = answer_probability(work, tok, [(e.prompt, e.completion) for e in forget_ex])
            r = answer_probability(work, tok, [(e.prompt, e.completion) for e in retain_ex])
            return f, r

        forget0, retain0 = scores_now()
        forget_now, retain_now, steps, stop = forget0, retain0, 0, "max_fraction"
        while int(sum(int(m.sum()) for m in pruned)) + per_step <= p["max_fraction"] * total:
            if forget_now <= (1 - p["target_drop"]) * forget0:
                stop = "target_drop"
                break
            picked, saved = _prune_most_specific(work, tok, (forget_ex, retain_ex), targets, pruned, per_step, p)
            f, r = scores_now()
            if r < (1 - p["retain_budget"]) * retain0:
                with torch.no_grad():
                    for tensor, copy in saved:
                        tensor.copy_(copy)
                stop = "retain_budget"
                break
            for i, j in picked:
                pruned[i][j] = True
            forget_now, retain_now, steps = f, r, steps + 1
        info = {
            "method": self.name,
            "params": dict(p),
            "seed": ctx.seed,
            "neurons_pruned": {t.name: int(m.sum()) for t, m in zip(targets, pruned, strict=True) if m.any()},
            "fraction_pruned": round(sum(int(m.sum()) for m in pruned) / total, 4),
            "steps": steps,
            "stop_reason": stop,
            "forget_answer_probability": [round(forget0, 4), round(forget_now, 4)],
            "retain_answer_probability": [round(retain0, 4), round(retain_now, 4)],
            "cost": {"steps": steps, "total_seconds": round(time.perf_counter() - start, 3)},
        }
        return finish(loaded, work, info)
