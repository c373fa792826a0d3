"""The logit lens: the residual stream after each layer, read through the final norm and the output head.

For each (prompt, answer) pair the kernel gives the rank (0 = most likely) of
each answer token at the position before it (teacher-forced), once per decoder
layer (Patil et al. 2023's head projection, there on the first token only). A
model whose last layers were changed to hide an answer can still rank it first
in an earlier layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from auditor.lm.hooks import block_states, decoder_parts, forward_hooks
from auditor.lm.teacher_forcing import length_buckets, padded_batch
from auditor.lm.tokens import encode_pairs, pad_token_id


@torch.no_grad()
def answer_ranks(
    model, tokenizer, pairs: Sequence[tuple[str, str]], max_rows: int, max_tokens: int
) -> list[np.ndarray]:
    """Per pair, the rank of each answer token after each layer ([answer tokens, layers] ints); the model must
    have ``decoder_parts``."""
    parts = decoder_parts(model)
    if parts is None:
        raise ValueError("the model exposes no decoder blocks, final norm and output head to read a lens from")
    blocks, norm, head = parts
    encoded = encode_pairs(tokenizer, pairs)
    device, pad = next(model.parameters()).device, pad_token_id(tokenizer)
    where: dict[str, torch.Tensor] = {}  # the batch's (rows, positions) before each answer token
    captured: list[torch.Tensor] = []  # each block's output there, [answer tokens, hidden]

    def capture(_module, _inputs, output) -> None:
        states = block_states(output)
        captured.append(states[where["rows"].to(states.device), where["positions"].to(states.device)])

    head_device = next(head.parameters()).device
    results: list[np.ndarray] = [np.zeros((0, len(blocks)), dtype=int)] * len(encoded)
    with forward_hooks(blocks, capture):
        for bucket in length_buckets([len(e.input_ids) for e in encoded], max_rows, max_tokens):
            ids, attention, answer = padded_batch([encoded[i] for i in bucket], pad)
            rows, positions = torch.nonzero(answer[:, 1:], as_tuple=True)  # the state at t predicts token t+1
            where.update(rows=rows, positions=positions)
            targets = ids[rows, positions + 1].to(head_device)[:, None]
            captured.clear()
            model(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False)
            ranks = []
            for states in captured:
                logits = head(norm(states.to(head_device))).float()
                ranks.append((logits > logits.gather(-1, targets)).sum(-1).cpu())
            table = torch.stack(ranks, dim=1).numpy()  # [answer tokens of the batch, layers]
            ends = np.cumsum(torch.bincount(rows, minlength=len(bucket)).numpy())  # rows come out in order
            for row, i in enumerate(bucket):
                results[i] = table[(ends[row - 1] if row else 0) : ends[row]]
    return results
