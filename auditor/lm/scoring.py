"""The narrow model interface probes use, batched and memoized (lm-eval's ``loglikelihood`` / ``generate_until``).

``ScoringModel`` never loads weights and memoizes every result, so probes that
ask for the same (prompt, answer) pair share one forward pass; the kernels are
``auditor.lm.teacher_forcing`` and ``auditor.lm.generation``.
A model with a ``prompt_edit`` (a prompt-level attack's variant) is asked every
question edited; the memo keeps the edited prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch

from auditor.lm.budget import automatic_token_cap
from auditor.lm.generation import generate_scored, greedy_generate, stop_token_ids
from auditor.lm.hooks import decoder_parts
from auditor.lm.ledger import watch
from auditor.lm.lens import answer_ranks
from auditor.lm.teacher_forcing import (
    MAX_BATCH_ROWS,
    MAX_BATCH_TOKENS,
    TokenStats,
    context_length,
    length_buckets,
    teacher_forced,
)

T = TypeVar("T")

__all__ = [
    "MAX_BATCH_ROWS",
    "MAX_BATCH_TOKENS",
    "ScoringModel",
    "TokenStats",
    "context_length",
    "generate_scored",
    "greedy_generate",
    "length_buckets",
    "teacher_forced",
]


def _scatter(mask: Sequence[bool], values: Sequence) -> list:
    """``values`` placed where ``mask`` is true, None elsewhere."""
    it = iter(values)
    return [next(it) if keep else None for keep in mask]


class ScoringModel:
    """The narrow, memoized interface probes use to question one model.

    A request that does not fit the model's context (the prompt with its answer,
    or with the new tokens a generation may add) gets ``None``, as an item a
    routed model may not answer: the probes count it as unscored, never a crash.
    """

    def __init__(self, loaded, max_rows: int | None = None, max_tokens: int | None = None):
        self.loaded = loaded
        watch(loaded.model)
        self._edit: Callable[[str], str] = getattr(loaded, "prompt_edit", None) or str
        rows = max_rows or getattr(getattr(loaded, "spec", None), "batch_size", None)
        self.halving = rows is None  # automatic batches: halved on out-of-memory, as lm-eval's batch_size=auto
        # a batch size the user gives is rows only (as lm-eval's): no token cap beside it
        self.max_rows = rows or MAX_BATCH_ROWS
        self.max_tokens = max_tokens or (
            automatic_token_cap(loaded.model) if self.halving else self.max_rows * (1 << 20)
        )
        self.context = context_length(loaded.model, loaded.tokenizer)
        self._stop_ids: dict[tuple[str, ...], torch.Tensor] = {}
        self._stats: dict[tuple[str, str], TokenStats] = {}
        self._texts: dict[tuple[str, int, tuple[str, ...]], str] = {}
        self._lengths: dict[str, int] = {}
        self._ranks: dict[tuple[str, str], np.ndarray] = {}
        self.sequences_scored = 0  # unique teacher-forced sequences run, for tests and benchmarks
        self.prompts_generated = 0

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text as the model reads it (special tokens included; memoized)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._lengths))
        if todo:
            encoded = self.loaded.tokenizer(todo, add_special_tokens=True)["input_ids"]
            self._lengths.update(zip(todo, (len(e) for e in encoded), strict=True))
        return [self._lengths[t] for t in texts]

    def fits(self, texts: Sequence[str], extra: int = 0) -> list[bool]:
        """Whether each text, with ``extra`` tokens more, fits the model's context.

        A text needs at most one token per UTF-8 byte, plus the special tokens the tokenizer adds, so only
        texts near the limit are tokenized.
        """
        if self.context is None:
            return [True] * len(texts)
        special = self.token_counts([""])[0]
        near = [t for t in texts if len(t.encode("utf-8")) + special + extra > self.context]
        counts = dict(zip(near, self.token_counts(near), strict=True))
        return [t not in counts or counts[t] + extra <= self.context for t in texts]

    def token_stats(
        self, pairs: Sequence[tuple[str, str]], groups: Sequence[str] | None = None, moments: bool = False
    ) -> list[TokenStats | None]:
        """Teacher-forced statistics of each (prompt, answer); ``groups`` only matter when routed."""
        pairs = [(self._edit(p), a) for p, a in pairs]
        fitting = self.fits([p + a for p, a in pairs])
        return _scatter(fitting, self._token_stats([p for p, ok in zip(pairs, fitting, strict=True) if ok], moments))

    def _token_stats(self, pairs: Sequence[tuple[str, str]], moments: bool) -> list[TokenStats]:
        todo = list(
            dict.fromkeys(p for p in pairs if p not in self._stats or (moments and not self._stats[p].has_moments))
        )
        if todo:
            model, tokenizer = self.loaded.model, self.loaded.tokenizer
            stats = self._fitted(lambda rows, tokens: teacher_forced(model, tokenizer, todo, rows, tokens, moments))
            self._stats.update(zip(todo, stats, strict=True))
            self.sequences_scored += len(todo)
        return [self._stats[p] for p in pairs]

    def answer_ranks(
        self, pairs: Sequence[tuple[str, str]], groups: Sequence[str] | None = None
    ) -> list[np.ndarray | None]:
        """The logit lens (``auditor.lm.lens``): the rank of each answer token after every layer ([tokens, layers]);
        None for a pair that does not fit, and for all when the model exposes no lens."""
        if decoder_parts(self.loaded.model) is None:
            return [None] * len(pairs)
        pairs = [(self._edit(p), a) for p, a in pairs]
        fitting = self.fits([p + a for p, a in pairs])
        todo = list(dict.fromkeys(p for p, ok in zip(pairs, fitting, strict=True) if ok and p not in self._ranks))
        if todo:
            model, tokenizer = self.loaded.model, self.loaded.tokenizer
            ranks = self._fitted(lambda rows, tokens: answer_ranks(model, tokenizer, todo, rows, tokens))
            self._ranks.update(zip(todo, ranks, strict=True))
        return [self._ranks[p] if ok else None for p, ok in zip(pairs, fitting, strict=True)]

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        stop: Sequence[str] = ("\n",),
        groups: Sequence[str] | None = None,
    ) -> list[str | None]:
        """Greedy continuations of each prompt (memoized)."""
        prompts = [self._edit(p) for p in prompts]
        fitting = self.fits(prompts, max_new_tokens)
        kept = [p for p, ok in zip(prompts, fitting, strict=True) if ok]
        return _scatter(fitting, self._generate(kept, max_new_tokens, stop))

    def _generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str]) -> list[str]:
        keys = [(p, max_new_tokens, tuple(stop)) for p in prompts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._texts))
        if todo:
            prompts_todo = [k[0] for k in todo]
            stops = self._stops(stop)
            texts = self._fitted(
                lambda rows, tokens: greedy_generate(
                    *self._model_and_tokenizer, prompts_todo, max_new_tokens, stop, rows, tokens, stops
                )
            )
            self._texts.update(zip(todo, texts, strict=True))
            self.prompts_generated += len(todo)
        return [self._texts[k] for k in keys]

    def generate_scored(
        self,
        prompts: Sequence[str],
        answers: Sequence[Sequence[str]],
        max_new_tokens: int = 32,
        stop: Sequence[str] = ("\n",),
        groups: Sequence[str] | None = None,
        answer_margin: int | None = None,
    ) -> list[tuple[str, list[TokenStats]] | None]:
        """Greedy continuation of each prompt and the statistics of its answers (memoized; one prefill serves both).
        With ``answer_margin``, a prompt generates at most its longest answer's tokens plus that many."""
        prompts = [self._edit(p) for p in prompts]
        answered = iter(
            self.fits([p + a for p, prompt_answers in zip(prompts, answers, strict=True) for a in prompt_answers])
        )
        answers_fit = [all([next(answered) for _ in prompt_answers]) for prompt_answers in answers]
        fitting = [a and b for a, b in zip(self.fits(prompts, max_new_tokens), answers_fit, strict=True)]
        kept = [(p, a) for p, a, ok in zip(prompts, answers, fitting, strict=True) if ok]
        done = self._generate_scored([p for p, _ in kept], [a for _, a in kept], max_new_tokens, stop, answer_margin)
        return _scatter(fitting, done)

    def _limits(self, answers: Sequence[Sequence[str]], max_new_tokens: int, margin: int | None) -> list[int]:
        """Each prompt's cap on new tokens: its longest answer's tokens plus ``margin``, at most ``max_new_tokens``."""
        if margin is None:
            return [max_new_tokens] * len(answers)
        tokenizer = self._model_and_tokenizer[1]
        lengths = [[len(ids) for ids in tokenizer(list(a), add_special_tokens=False)["input_ids"]] for a in answers]
        return [min(max_new_tokens, max(n, default=0) + margin) for n in lengths]

    def _generate_scored(
        self,
        prompts: Sequence[str],
        answers: Sequence[Sequence[str]],
        max_new_tokens: int,
        stop: Sequence[str],
        margin: int | None,
    ) -> list[tuple[str, list[TokenStats]]]:
        caps = self._limits(answers, max_new_tokens, margin)
        keys = [(p, cap, tuple(stop)) for p, cap in zip(prompts, caps, strict=True)]  # a text is its prompt's and cap's
        todo = list(dict.fromkeys(k for k in keys if k not in self._texts))
        if todo:
            wanted: dict[str, list[str]] = {k[0]: [] for k in todo}
            for prompt, prompt_answers in zip(prompts, answers, strict=True):
                if prompt in wanted:
                    new = (a for a in prompt_answers if (prompt, a) not in self._stats)
                    wanted[prompt] = list(dict.fromkeys([*wanted[prompt], *new]))
            prompts_todo, asked = [k[0] for k in todo], [wanted[k[0]] for k in todo]
            limits = [k[1] for k in todo]
            stops = self._stops(stop)
            texts, stats = self._fitted(
                lambda rows, tokens: generate_scored(
                    *self._model_and_tokenizer, prompts_todo, asked, max_new_tokens, stop, rows, tokens, stops, limits
                )
            )
            self._texts.update(zip(todo, texts, strict=True))
            for key, prompt_answers, prompt_stats in zip(todo, asked, stats, strict=True):
                self._stats.update(zip(((key[0], a) for a in prompt_answers), prompt_stats, strict=True))
                self.sequences_scored += len(prompt_answers)
            self.prompts_generated += len(todo)
        pairs = [(p, a) for p, prompt_answers in zip(prompts, answers, strict=True) for a in prompt_answers]
        flat = iter(self._token_stats(pairs, moments=False))  # held now, except answers of prompts generated before
        return [(self._texts[key], [next(flat) for _ in asked]) for key, asked in zip(keys, answers, strict=True)]

    @property
    def _model_and_tokenizer(self) -> tuple:
        return self.loaded.model, self.loaded.tokenizer

    def _stops(self, stop: Sequence[str]) -> torch.Tensor:
        """The stop token ids of ``stop`` (computed once per stop strings)."""
        if tuple(stop) not in self._stop_ids:
            self._stop_ids[tuple(stop)] = stop_token_ids(self.loaded.tokenizer, stop)
        return self._stop_ids[tuple(stop)]

    def _fitted(self, kernel: Callable[[int, int], T]) -> T:
        """``kernel(max_rows, max_tokens)``; with automatic batches, halved and run again after an out-of-memory
        error (the kernels are pure, so a batch run again gives the same results)."""
        while True:
            try:
                return kernel(self.max_rows, self.max_tokens)
            except torch.OutOfMemoryError:
                if not self.halving or self.max_rows == 1:
                    raise
                self.max_rows, self.max_tokens = max(1, self.max_rows // 2), max(1, self.max_tokens // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
