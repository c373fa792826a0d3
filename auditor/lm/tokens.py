"""Which tokens count: the single definition shared by training and every teacher-forced metric.

A prompt and its answer are tokenized *together* (byte-level BPE merges the space
before an answer into the answer's first token, so tokenizing them apart gives
other tokens), and the answer's tokens are found by character offsets: a token
belongs to the answer when its character span ends after the prompt ends.

- Scoring counts the answer tokens only (no EOS).
- Training counts the answer tokens plus one EOS appended after them, so that
  greedy generation learns to stop.
- A plain text (empty prompt) counts every token except a leading BOS.
- A text with marked character spans (``encode_spans``: several answers in one
  sequence) counts the tokens whose character span overlaps a marked span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from auditor.errors import UserError


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of prompt+answer and a 0/1 mask marking the answer's tokens."""

    input_ids: tuple[int, ...]
    answer_mask: tuple[int, ...]

    @property
    def n_answer_tokens(self) -> int:
        return sum(self.answer_mask)


def _require_fast(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("a fast tokenizer is required (character offsets locate the answer tokens)")


def encode_pair(tokenizer, prompt: str, answer: str, *, add_eos: bool = False) -> EncodedPair:
    """Tokenize ``prompt + answer`` in one pass and mark the answer tokens by offsets."""
    return encode_pairs(tokenizer, [(prompt, answer)], add_eos=add_eos)[0]


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], *, add_eos: bool = False) -> list[EncodedPair]:
    """``encode_pair`` of many pairs with one batched tokenizer call."""
    _require_fast(tokenizer)
    if not pairs:
        return []
    enc = tokenizer([prompt + answer for prompt, answer in pairs], return_offsets_mapping=True, add_special_tokens=True)
    special = set(tokenizer.all_special_ids)
    encoded = []
    for (prompt, _), ids, offsets in zip(pairs, enc["input_ids"], enc["offset_mapping"], strict=True):
        ids = list(ids)
        boundary = len(prompt)
        mask = [
            int(end > boundary and end > start and tok not in special)
            for tok, (start, end) in zip(ids, offsets, strict=True)
        ]
        if add_eos and tokenizer.eos_token_id is not None:
            if ids and ids[-1] == tokenizer.eos_token_id:
                mask[-1] = 1
            else:
                ids.append(tokenizer.eos_token_id)
                mask.append(1)
        encoded.append(EncodedPair(tuple(ids), tuple(mask)))
    return encoded


def encode_spans(tokenizer, text: str, spans: Sequence[tuple[int, int]], *, add_eos: bool = False) -> EncodedPair:
    """Tokenize ``text`` and mark the tokens overlapping any ``(start, end)`` character span (plus EOS)."""
    _require_fast(tokenizer)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    special = set(tokenizer.all_special_ids)
    ids = list(enc["input_ids"])
    mask = [
        int(end > start and tok not in special and any(end > a and start < b for a, b in spans))
        for tok, (start, end) in zip(ids, enc["offset_mapping"], strict=True)
    ]
    if add_eos and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        mask.append(1)
    return EncodedPair(tuple(ids), tuple(mask))


def pad_token_id(tokenizer) -> int:
    """The id used for padding (pad, else EOS, else 0)."""
    for tok in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tok is not None:
            return tok
    return 0
