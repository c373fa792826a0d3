"""A soft prompt: a few input embeddings no token has, written into prompts as tokens of their own.

The variant's tokenizer is a copy of the input's with ``n`` added special
tokens (ids from ``len(tokenizer)`` on), and its input embedding a wrapper that
looks those ids up in a trained ``[n, hidden]`` table and every other id in the
input's own embedding. Sequences keep one position per token, so generation,
teacher forcing and the logit lens run unchanged; the special tokens are never
scored. The output head is untouched: the model never predicts a soft token.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from auditor.lm.adapters import shared_variant
from auditor.lm.models import LoadedModel

SOFT_TOKEN = "<|soft_{}|>"


class SoftPromptEmbedding(nn.Module):
    """``base`` for ids below ``first_id``; row ``id - first_id`` of the trainable ``soft`` table from there on."""

    def __init__(self, base: nn.Module, first_id: int, soft: torch.Tensor):
        super().__init__()
        self.base = base
        self.first_id = first_id
        self.soft = nn.Parameter(soft)

    @property
    def weight(self) -> torch.Tensor:
        """The input's embedding matrix (what code reading ``get_input_embeddings().weight`` expects)."""
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_soft = input_ids >= self.first_id
        embedded = self.base(input_ids.masked_fill(is_soft, 0))
        if not bool(is_soft.any()):
            return embedded
        rows = (input_ids - self.first_id).clamp(0, len(self.soft) - 1)
        return torch.where(is_soft.unsqueeze(-1), self.soft[rows].to(embedded.dtype), embedded)


def soft_prompt_variant(loaded: LoadedModel, length: int, seed: int, label: str) -> tuple[LoadedModel, str]:
    """``loaded`` on a shared copy of its weights with ``length`` soft tokens, and the text that writes them.

    The table starts as the embeddings of ``length`` vocabulary tokens drawn with ``seed`` (Lester et al.'s
    initialisation from the vocabulary).
    """
    variant = shared_variant(loaded, label)
    tokenizer: Any = copy.deepcopy(loaded.tokenizer)
    first_id = len(tokenizer)
    names = [SOFT_TOKEN.format(i) for i in range(length)]
    tokenizer.add_tokens(names, special_tokens=True)
    base = variant.model.get_input_embeddings()
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.randint(0, min(first_id, base.weight.shape[0]), (length,), generator=generator)
    start = base.weight.detach()[drawn.to(base.weight.device)].clone().float()
    variant.model.set_input_embeddings(SoftPromptEmbedding(base, first_id, start))  # float32: trained as such
    variant.tokenizer = tokenizer
    return variant, "".join(names)


def soft_table(model: nn.Module) -> nn.Parameter:
    """The trainable table of a model made by ``soft_prompt_variant``."""
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, SoftPromptEmbedding):
        raise TypeError("the model has no soft prompt")
    return embedding.soft
