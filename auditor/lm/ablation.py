"""Directional ablation: mean-difference directions of the residual stream, projected out by forward hooks.

Per decoder block, the direction is the difference between the mean output of
the block at the last token of one set of prompts and that of another
(Arditi et al. 2024's refusal direction, per layer as Lucki et al. 2024 use it
against unlearning). ``DirectionAblation`` holds the unit directions as a
buffer (so they are part of the model's state and fingerprint) and removes each
block's direction from that block's output at every position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from auditor.lm.hooks import block_states, decoder_parts, forward_hooks
from auditor.lm.tokens import pad_token_id

BATCH_ROWS = 32  # prompts per forward pass while measuring the means


@torch.no_grad()
def last_token_means(model, tokenizer, prompts: Sequence[str], blocks: nn.ModuleList) -> torch.Tensor:
    """The mean output of each block at each prompt's last token, ``[blocks, hidden]`` (float32)."""
    device, pad = next(model.parameters()).device, pad_token_id(tokenizer)
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    where: dict[str, torch.Tensor] = {}
    captured: list[torch.Tensor] = []

    def capture(_module, _inputs, output) -> None:
        states = block_states(output)
        captured.append(states[where["rows"].to(states.device), where["last"].to(states.device)].float().sum(0))

    total: torch.Tensor | None = None
    with forward_hooks(blocks, capture):
        for start in range(0, len(encoded), BATCH_ROWS):
            batch = encoded[start : start + BATCH_ROWS]
            ids = torch.full((len(batch), max(map(len, batch))), pad, dtype=torch.long)
            attention = torch.zeros_like(ids)
            for row, tokens in enumerate(batch):
                ids[row, : len(tokens)], attention[row, : len(tokens)] = torch.tensor(tokens), 1
            where.update(rows=torch.arange(len(batch)), last=attention.sum(1) - 1)
            captured.clear()
            model(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False)
            sums = torch.stack([c.cpu() for c in captured])
            total = sums if total is None else total + sums
    assert total is not None, "no prompts"
    return total / len(encoded)


class DirectionAblation(nn.Module):
    """Removes ``directions[i]`` (unit vectors) from the output of block ``i``, at every position, once attached."""

    def __init__(self, directions: torch.Tensor):
        super().__init__()
        norms = directions.norm(dim=-1, keepdim=True)
        self.register_buffer("directions", directions / norms.clamp(min=torch.finfo(directions.dtype).tiny))

    def attach(self, blocks: nn.ModuleList) -> None:
        for index, block in enumerate(blocks):
            block.register_forward_hook(self._hook(index))

    def _hook(self, index: int):
        def project_out(_module, _inputs, output):
            states = block_states(output)
            direction = self.directions[index].to(states.device, states.dtype)
            states = states - (states @ direction).unsqueeze(-1) * direction
            return (states, *output[1:]) if isinstance(output, tuple) else states

        return project_out


def ablate_mean_difference(
    model, tokenizer, toward: Sequence[str], away: Sequence[str], chosen: Sequence[int] | None = None
) -> torch.Tensor:
    """Attach to ``model`` a ``DirectionAblation`` of each block's mean difference, ``toward`` minus ``away``
    prompts (as the submodule ``direction_ablation``), in the ``chosen`` blocks (default: all); returns the
    differences of those blocks before normalising."""
    parts = decoder_parts(model)
    if parts is None:
        raise ValueError("the model exposes no decoder blocks to take directions from")
    blocks = parts[0]
    indices = list(range(len(blocks))) if chosen is None else list(chosen)
    picked = nn.ModuleList([blocks[i] for i in indices])
    difference = last_token_means(model, tokenizer, toward, picked) - last_token_means(model, tokenizer, away, picked)
    ablation = DirectionAblation(difference.to(next(model.parameters()).device))
    ablation.attach(picked)
    model.add_module("direction_ablation", ablation)
    return difference
