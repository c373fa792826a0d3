"""Training batches: right-padded token ids, and the batches of one stream in seeded order, epoch after epoch."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Right-padded token ids; ``labels`` is -100 outside the counted tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def collate(encoded: Sequence[tuple[tuple[int, ...], tuple[int, ...]]], pad_id: int) -> Batch:
    """Right-pad (ids, mask) pairs into a batch."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for row, (ids, mask) in enumerate(encoded):
        n = len(ids)
        input_ids[row, :n] = torch.tensor(ids)
        attention[row, :n] = 1
        labels[row, :n] = torch.tensor([t if m else -100 for t, m in zip(ids, mask, strict=True)])
    return Batch(input_ids, attention, labels)


LENGTH_GROUP_BATCHES = 32  # batches per length-sorted "megabatch"


class StreamSampler:
    """Cycles through a stream in seeded random order, one epoch after another.

    With ``group_by_length`` each epoch is cut into megabatches of
    ``LENGTH_GROUP_BATCHES`` batches, sorted by length inside each, and the
    resulting batches are shuffled: every example is still seen once per
    epoch, with far less padding.
    """

    def __init__(self, encoded: list, batch_size: int, rng: random.Random, group_by_length: bool = False):
        self.encoded, self.rng, self.group_by_length = encoded, rng, group_by_length
        self.batch_size = min(batch_size, len(encoded))
        self.pending: list[list[int]] = []  # batches of indices left in this epoch (grouped mode)
        self.order: list[int] = []

    def _epoch_batches(self) -> list[list[int]]:
        order = list(range(len(self.encoded)))
        self.rng.shuffle(order)
        size, batches = self.batch_size, []
        for start in range(0, len(order), size * LENGTH_GROUP_BATCHES):
            chunk = sorted(order[start : start + size * LENGTH_GROUP_BATCHES], key=lambda i: len(self.encoded[i][0]))
            batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
        self.rng.shuffle(batches)
        return batches

    def _next_indices(self) -> list[int]:
        if self.group_by_length:
            if not self.pending:
                self.pending = self._epoch_batches()
            return self.pending.pop()
        take: list[int] = []
        while len(take) < self.batch_size:
            if not self.order:
                self.order = list(range(len(self.encoded)))
                self.rng.shuffle(self.order)
            take.append(self.order.pop())
        return take

    def next_batch(self, pad_id: int) -> Batch:
        return collate([self.encoded[i] for i in self._next_indices()], pad_id)
