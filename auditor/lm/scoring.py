"""Batched kernels: teacher-forced token statistics and greedy generation, behind one cached interface.

``ScoringModel`` is the narrow model interface probes use (lm-eval's
``loglikelihood`` / ``generate_until``): it never loads weights and memoizes
every result, so probes that ask for the same (prompt, answer) pair share one
forward pass. ``RoutedScoringModel`` serves an attack that produced several
models (relearning folds): each request goes to a model whose fine-tune never
saw the request's subject.

Which tokens count is defined once in ``auditor.lm.tokens``.
"""

from __future__ import annotations

import copy
import inspect
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from auditor.lm.tokens import EncodedPair, encode_pairs
from auditor.lm.training import pad_token_id


@dataclass(frozen=True)
class TokenStats:
    """Per answer token: its log-probability and, when asked for, the mean and variance of log p under the model.

    ``mean_logprob`` and ``var_logprob`` are E[log p(z)] and Var[log p(z)] for z drawn
    from the model's own next-token distribution at that position (Min-K%++ needs them);
    ``None`` unless the statistics were computed with ``moments=True``.
    """

    token_ids: np.ndarray
    logprobs: np.ndarray
    mean_logprob: np.ndarray | None = None
    var_logprob: np.ndarray | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.logprobs.size)

    @property
    def total(self) -> float:
        return float(self.logprobs.sum())

    @property
    def mean(self) -> float:
        """Mean log-probability per answer token (minus the average NLL); NaN without tokens."""
        return float(self.logprobs.mean()) if self.logprobs.size else float("nan")

    @property
    def has_moments(self) -> bool:
        return self.mean_logprob is not None


MAX_BATCH_ROWS = 256  # sequences per forward pass
MAX_BATCH_TOKENS = 8192  # padded tokens per forward pass (generation counts the new tokens too)


def length_buckets(
    lengths: Sequence[int], max_rows: int = MAX_BATCH_ROWS, max_tokens: int = MAX_BATCH_TOKENS, extra: int = 0
) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most ``max_rows`` rows and ``max_tokens`` padded tokens.

    ``extra`` is added to every length (the tokens generation appends). A batch
    always takes at least one sequence, however long.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        width = lengths[i] + extra  # ascending order: the widest of the batch so far
        if current and (len(current) >= max_rows or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    return [*batches, current] if current else batches


_ENCODINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {(prompt, answer): EncodedPair}


def _encoded(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[EncodedPair]:
    """``encode_pairs``, memoized per tokenizer: every model variant of an audit scores the same pairs."""
    memo = _ENCODINGS.setdefault(tokenizer, {})
    todo = list(dict.fromkeys(p for p in pairs if p not in memo))
    memo.update(zip(todo, encode_pairs(tokenizer, todo), strict=True))
    return [memo[p] for p in pairs]


_HEAD_SPLITS: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def _head_splits(model, ids: torch.Tensor, attention: torch.Tensor) -> bool:
    """Whether the decoder followed by the output head gives the model's own logits (no softcap or scale between)."""
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
        if decoder is None or decoder is model or head is None:
            return False
        full = model(input_ids=ids, attention_mask=attention, use_cache=False).logits.float()
        split = head(decoder(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state).float()
    except (AttributeError, TypeError, NotImplementedError):
        return False
    tolerance = max(1e-3, 4 * torch.finfo(full.dtype if full.is_floating_point() else torch.float32).eps)
    return split.shape == full.shape and torch.allclose(split, full, rtol=tolerance, atol=tolerance)


def _logits_at(model, ids: torch.Tensor, attention: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor):
    """The model's logits at the (row, position) pairs; the output head runs on those positions only when it may."""
    if model not in _HEAD_SPLITS:
        _HEAD_SPLITS[model] = _head_splits(model, ids[:4], attention[:4])
    if not _HEAD_SPLITS[model]:
        return model(input_ids=ids, attention_mask=attention, use_cache=False).logits[rows, positions]
    hidden = model.get_decoder()(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
    return model.get_output_embeddings()(hidden[rows, positions])


@torch.no_grad()
def teacher_forced(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    max_rows: int = MAX_BATCH_ROWS,
    max_tokens: int = MAX_BATCH_TOKENS,
    moments: bool = False,
) -> list[TokenStats]:
    """Token statistics of each answer given its prompt, from right-padded, length-bucketed batches.

    ``moments`` adds the mean and variance of log p over the vocabulary at each
    answer token (a few passes over the vocabulary per token: only Min-K%++ needs them).
    """
    encoded = _encoded(tokenizer, pairs)
    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    results: list[TokenStats | None] = [None] * len(encoded)
    for bucket in length_buckets([len(e.input_ids) for e in encoded], max_rows, max_tokens):
        width = max(len(encoded[i].input_ids) for i in bucket)
        ids = torch.full((len(bucket), width), pad, dtype=torch.long)
        attention = torch.zeros((len(bucket), width), dtype=torch.long)
        answer = torch.zeros((len(bucket), width), dtype=torch.bool)
        for row, i in enumerate(bucket):
            n = len(encoded[i].input_ids)
            ids[row, :n] = torch.tensor(encoded[i].input_ids)
            attention[row, :n] = 1
            answer[row, :n] = torch.tensor(encoded[i].answer_mask, dtype=torch.bool)
        rows, positions = torch.nonzero(answer[:, 1:], as_tuple=True)  # logits at t predict token t+1
        targets = ids[rows, positions + 1]
        logits = _logits_at(model, ids.to(device), attention.to(device), rows.to(device), positions.to(device))
        logp = torch.log_softmax(logits.float(), dim=-1)  # every answer token
        token_logp = logp.gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1).cpu().double().numpy()
        mean = var = None
        if moments:
            probs = logp.exp()
            mean_t = (probs * logp).sum(-1)
            var_t = (probs * (logp - mean_t.unsqueeze(-1)).square()).sum(-1).clamp(min=0)
            mean, var = (t.cpu().double().numpy() for t in (mean_t, var_t))
        target_ids = targets.numpy()
        ends = np.cumsum(torch.bincount(rows, minlength=len(bucket)).numpy())  # rows come out in order
        for row, i in enumerate(bucket):
            part = slice(ends[row - 1] if row else 0, ends[row])
            results[i] = TokenStats(
                target_ids[part],
                token_logp[part],
                None if mean is None else mean[part],
                None if var is None else var[part],
            )
    return results  # type: ignore[return-value]


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for marker in stop:
        found = text.find(marker)
        if found != -1:
            cut = min(cut, found)
    return text[:cut]


def stop_token_ids(tokenizer, stop: Sequence[str]) -> torch.Tensor:
    """Ids of the tokens whose text contains one of ``stop``."""
    if not stop:
        return torch.zeros(0, dtype=torch.long)
    ids = [i for i in range(len(tokenizer)) if any(m in tokenizer.decode([i]) for m in stop)]
    return torch.tensor(ids, dtype=torch.long)


def _stop_tensor(tokenizer, stop: Sequence[str], stop_ids: torch.Tensor | None) -> torch.Tensor:
    """The token ids that end a row: those holding a stop string, and EOS."""
    stops = stop_token_ids(tokenizer, stop) if stop_ids is None else stop_ids
    if tokenizer.eos_token_id is not None:
        stops = torch.cat([stops, torch.tensor([tokenizer.eos_token_id])])
    return stops


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def _left_padded(encoded: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask with every prompt ending at the last column."""
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, width - len(tokens) :] = torch.tensor(tokens)
        attention[row, width - len(tokens) :] = 1
    return ids, attention


def _prefill(model, ids: torch.Tensor, attention: torch.Tensor):
    """One pass over left-padded prompts: the KV cache, the logits after each prompt, its last position ids."""
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    out = model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True, **extra)
    return out.past_key_values, out.logits[:, -1], positions[:, -1:]


def _decode(
    model,
    cache,
    next_ids: torch.Tensor,
    attention: torch.Tensor,
    last: torch.Tensor,
    max_new_tokens: int,
    stop_ids: torch.Tensor,
):
    """New token ids per row, greedily from a prefilled cache; a row leaves the batch at a stop token.

    A row ends after emitting EOS or a token of ``stop_ids`` (kept in its
    output); finished rows are dropped from the batch and the cache, so the
    remaining rows run alone.
    """
    alive = torch.arange(len(next_ids), device=next_ids.device)  # which input row each decoding row is
    tokens: list[list[int]] = [[] for _ in range(len(next_ids))]
    done = [False] * len(next_ids)
    for step in range(max_new_tokens):
        finished = torch.isin(next_ids, stop_ids)
        for row, token, stops in zip(alive.tolist(), next_ids.tolist(), finished.tolist(), strict=True):
            if not done[row]:
                tokens[row].append(token)
                done[row] = stops
        if step == max_new_tokens - 1 or all(done):
            break
        if bool(finished.any()) and hasattr(cache, "batch_select_indices"):
            keep = (~finished).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            alive, next_ids, attention, last = alive[keep], next_ids[keep], attention[keep], last[keep]
        attention = torch.cat([attention, attention.new_ones((len(attention), 1))], dim=1)
        last = last + 1
        out = model(
            input_ids=next_ids[:, None],
            attention_mask=attention,
            position_ids=last,
            past_key_values=cache,
            use_cache=True,
        )
        cache, next_ids = out.past_key_values, out.logits[:, -1].argmax(-1)
    return tokens


def _greedy_tokens(model, ids: torch.Tensor, attention: torch.Tensor, max_new_tokens: int, stop_ids: torch.Tensor):
    """New token ids per row: greedy decoding with a KV cache (see ``_decode``)."""
    cache, logits, last = _prefill(model, ids, attention)
    return _decode(model, cache, logits.argmax(-1), attention, last, max_new_tokens, stop_ids)


@torch.no_grad()
def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    stop: Sequence[str] = ("\n",),
    max_rows: int = MAX_BATCH_ROWS,
    max_tokens: int = MAX_BATCH_TOKENS,
    stop_ids: torch.Tensor | None = None,
) -> list[str]:
    """Greedy continuations of each prompt, cut at EOS or the first stop string.

    A row stops early once it emits a token holding a stop string (``stop_ids``,
    computed from the vocabulary when not given); the text is cut at the first
    stop string either way, so early stopping never changes an output.
    """
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"] if prompts else []
    device = next(model.parameters()).device
    stops = _stop_tensor(tokenizer, stop, stop_ids).to(device)
    outputs: list[str] = [""] * len(prompts)
    for bucket in length_buckets([len(e) for e in encoded], max_rows, max_tokens, extra=max_new_tokens):
        ids, attention = _left_padded([encoded[i] for i in bucket], pad_token_id(tokenizer))
        new_tokens = _greedy_tokens(model, ids.to(device), attention.to(device), max_new_tokens, stops)
        for i, tokens in zip(bucket, new_tokens, strict=True):
            outputs[i] = _cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), stop)
    return outputs


Continuation = tuple[tuple[int, ...], tuple[int, ...]]  # the tokens after a prompt and their answer mask


def _continuation(pair: EncodedPair, prompt_ids: Sequence[int]) -> Continuation | None:
    """What follows the prompt in ``pair``, when prompt+answer tokenized together starts with the prompt's own tokens.

    None when a BPE merge crosses the boundary (then the prompt's cache holds other tokens).
    """
    n = len(prompt_ids)
    if tuple(pair.input_ids[:n]) != tuple(prompt_ids) or any(pair.answer_mask[:n]):
        return None
    return pair.input_ids[n:], pair.answer_mask[n:]


def _score_continuations(model, cache, first_logits, attention, last, rows: list[int], conts: list[Continuation]):
    """Teacher-forced statistics of continuations after prefilled prompts (``rows``: each one's prompt row).

    The prompts' cache is copied and its rows repeated per continuation, so the
    cache itself is left for decoding. A continuation's first token is predicted
    by the prompt's last logits, the others by the continuation's own pass.
    """
    width = max(len(ids) for ids, _ in conts)
    ids = torch.zeros((len(conts), max(width, 1)), dtype=torch.long)  # padding: masked out, never scored
    own = torch.zeros_like(ids)
    scored = torch.zeros_like(ids, dtype=torch.bool)
    for row, (tokens, mask) in enumerate(conts):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        own[row, : len(tokens)] = 1
        scored[row, : len(mask)] = torch.tensor(mask, dtype=torch.bool)
    device = attention.device
    ids, own, index = ids.to(device), own.to(device), torch.tensor(rows, device=device)
    copied = copy.deepcopy(cache)
    copied.batch_select_indices(index)
    out = model(
        input_ids=ids,
        attention_mask=torch.cat([attention[index], own], dim=1),
        position_ids=last[index] + 1 + torch.arange(ids.shape[1], device=device),
        past_key_values=copied,
        use_cache=True,
    )
    predictors = torch.cat([first_logits[index].unsqueeze(1), out.logits[:, :-1]], dim=1)
    r, t = torch.nonzero(scored.to(device), as_tuple=True)
    targets = ids[r, t]
    logp = torch.log_softmax(predictors[r, t].float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    token_logp, target_ids = logp.cpu().double().numpy(), targets.cpu().numpy()
    ends = np.cumsum(torch.bincount(r.cpu(), minlength=len(conts)).numpy())
    return [
        TokenStats(target_ids[start:end], token_logp[start:end])
        for start, end in zip(np.r_[0, ends[:-1]], ends, strict=True)
    ]


@torch.no_grad()
def generate_scored(
    model,
    tokenizer,
    prompts: Sequence[str],
    answers: Sequence[Sequence[str]],
    max_new_tokens: int = 32,
    stop: Sequence[str] = ("\n",),
    max_rows: int = MAX_BATCH_ROWS,
    max_tokens: int = MAX_BATCH_TOKENS,
    stop_ids: torch.Tensor | None = None,
) -> tuple[list[str], list[list[TokenStats]]]:
    """``greedy_generate`` of each prompt and ``teacher_forced`` statistics of its answers, from one prefill.

    The prompt's KV cache from the generation prefill also scores its answers.
    An answer whose joint tokenization does not start with the prompt's own
    tokens, or a model whose cache cannot be copied row by row, falls back to
    ``teacher_forced``; either way the numbers are the model's own.
    """
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"] if prompts else []
    joint = iter(_encoded(tokenizer, [(p, a) for p, ans in zip(prompts, answers, strict=True) for a in ans]))
    conts = [[_continuation(next(joint), ids) for _ in ans] for ids, ans in zip(encoded, answers, strict=True)]
    device = next(model.parameters()).device
    stops = _stop_tensor(tokenizer, stop, stop_ids).to(device)
    texts: list[str] = [""] * len(prompts)
    stats: list[list[TokenStats | None]] = [[None] * len(ans) for ans in answers]
    for bucket in length_buckets([len(e) for e in encoded], max_rows, max_tokens, extra=max_new_tokens):
        ids, attention = _left_padded([encoded[i] for i in bucket], pad_token_id(tokenizer))
        ids, attention = ids.to(device), attention.to(device)
        cache, logits, last = _prefill(model, ids, attention)
        todo = [(row, i, j) for row, i in enumerate(bucket) for j, c in enumerate(conts[i]) if c is not None]
        if todo and hasattr(cache, "batch_select_indices"):
            widest = ids.shape[1] + max(len(conts[i][j][0]) for _, i, j in todo)
            per_chunk = max(1, min(max_rows, max_tokens // widest))
            for start in range(0, len(todo), per_chunk):
                chunk = todo[start : start + per_chunk]
                rows, chunk_conts = [row for row, _, _ in chunk], [conts[i][j] for _, i, j in chunk]
                scored = _score_continuations(model, cache, logits, attention, last, rows, chunk_conts)
                for (_, i, j), item_stats in zip(chunk, scored, strict=True):
                    stats[i][j] = item_stats
        new_tokens = _decode(model, cache, logits.argmax(-1), attention, last, max_new_tokens, stops)
        for i, tokens in zip(bucket, new_tokens, strict=True):
            texts[i] = _cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), stop)
    rest = [(i, j) for i, per in enumerate(stats) for j, st in enumerate(per) if st is None]
    if rest:
        pairs = [(prompts[i], answers[i][j]) for i, j in rest]
        for (i, j), item_stats in zip(rest, teacher_forced(model, tokenizer, pairs, max_rows, max_tokens), strict=True):
            stats[i][j] = item_stats
    return texts, stats  # type: ignore[return-value]


UNLIMITED_TOKENIZER_LENGTH = 1_000_000  # tokenizers without a limit store a huge sentinel as model_max_length


def context_length(model, tokenizer) -> int | None:
    """The most tokens the model attends to: its config's position limit, else its tokenizer's (when one is set)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < UNLIMITED_TOKENIZER_LENGTH else None


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

    def __init__(self, loaded, max_rows: int = MAX_BATCH_ROWS, max_tokens: int = MAX_BATCH_TOKENS):
        self.loaded = loaded
        self.max_rows, self.max_tokens = max_rows, max_tokens
        self.context = context_length(loaded.model, loaded.tokenizer)
        self._stop_ids: dict[tuple[str, ...], torch.Tensor] = {}
        self._stats: dict[tuple[str, str], TokenStats] = {}
        self._texts: dict[tuple[str, int, tuple[str, ...]], str] = {}
        self._lengths: dict[str, int] = {}
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
        fitting = self.fits([p + a for p, a in pairs])
        return _scatter(fitting, self._token_stats([p for p, ok in zip(pairs, fitting, strict=True) if ok], moments))

    def _token_stats(self, pairs: Sequence[tuple[str, str]], moments: bool) -> list[TokenStats]:
        todo = list(
            dict.fromkeys(p for p in pairs if p not in self._stats or (moments and not self._stats[p].has_moments))
        )
        if todo:
            model, tokenizer = self.loaded.model, self.loaded.tokenizer
            stats = teacher_forced(model, tokenizer, todo, self.max_rows, self.max_tokens, moments)
            self._stats.update(zip(todo, stats, strict=True))
            self.sequences_scored += len(todo)
        return [self._stats[p] for p in pairs]

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        stop: Sequence[str] = ("\n",),
        groups: Sequence[str] | None = None,
    ) -> list[str | None]:
        """Greedy continuations of each prompt (memoized)."""
        fitting = self.fits(prompts, max_new_tokens)
        kept = [p for p, ok in zip(prompts, fitting, strict=True) if ok]
        return _scatter(fitting, self._generate(kept, max_new_tokens, stop))

    def _generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str]) -> list[str]:
        keys = [(p, max_new_tokens, tuple(stop)) for p in prompts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._texts))
        if todo:
            prompts_todo = [k[0] for k in todo]
            texts = greedy_generate(
                *self._model_and_tokenizer, prompts_todo, max_new_tokens, stop, *self._batching(stop)
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
    ) -> list[tuple[str, list[TokenStats]] | None]:
        """Greedy continuation of each prompt and the statistics of its answers (memoized; one prefill serves both)."""
        answered = iter(
            self.fits([p + a for p, prompt_answers in zip(prompts, answers, strict=True) for a in prompt_answers])
        )
        answers_fit = [all([next(answered) for _ in prompt_answers]) for prompt_answers in answers]
        fitting = [a and b for a, b in zip(self.fits(prompts, max_new_tokens), answers_fit, strict=True)]
        kept = [(p, a) for p, a, ok in zip(prompts, answers, fitting, strict=True) if ok]
        done = self._generate_scored([p for p, _ in kept], [a for _, a in kept], max_new_tokens, stop)
        return _scatter(fitting, done)

    def _generate_scored(
        self, prompts: Sequence[str], answers: Sequence[Sequence[str]], max_new_tokens: int, stop: Sequence[str]
    ) -> list[tuple[str, list[TokenStats]]]:
        keys = [(p, max_new_tokens, tuple(stop)) for p in prompts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._texts))
        if todo:
            wanted: dict[str, list[str]] = {k[0]: [] for k in todo}
            for prompt, prompt_answers in zip(prompts, answers, strict=True):
                if prompt in wanted:
                    new = (a for a in prompt_answers if (prompt, a) not in self._stats)
                    wanted[prompt] = list(dict.fromkeys([*wanted[prompt], *new]))
            prompts_todo, asked = [k[0] for k in todo], [wanted[k[0]] for k in todo]
            texts, stats = generate_scored(
                *self._model_and_tokenizer, prompts_todo, asked, max_new_tokens, stop, *self._batching(stop)
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

    def _batching(self, stop: Sequence[str]) -> tuple[int, int, torch.Tensor]:
        """The kernels' batch limits and the stop token ids (computed once per stop strings)."""
        if tuple(stop) not in self._stop_ids:
            self._stop_ids[tuple(stop)] = stop_token_ids(self.loaded.tokenizer, stop)
        return self.max_rows, self.max_tokens, self._stop_ids[tuple(stop)]


class RoutedScoringModel:
    """Several attacked models; each request goes to the first one that never trained on its subject.

    A request whose subject every model trained on gets ``None``: it cannot be
    scored without leaking the answer to the attacker.
    """

    def __init__(self, variants: Sequence[tuple[ScoringModel, frozenset[str]]]):
        self.variants = list(variants)

    def _route(self, groups: Sequence[str] | None, n: int) -> list[int | None]:
        if groups is None:
            if any(seen for _, seen in self.variants):  # a fine-tune saw some subjects: unknown items could leak
                raise ValueError("a model fine-tuned on some subjects is asked without the items' groups")
            groups = [None] * n  # type: ignore[list-item]
        routes = []
        for group in groups:
            routes.append(next((v for v, (_, seen) in enumerate(self.variants) if group not in seen), None))
        return routes

    def _dispatch(self, requests: list, groups, call) -> list:
        routes = self._route(groups, len(requests))
        results: list = [None] * len(requests)
        for v, (scorer, _) in enumerate(self.variants):
            picked = [i for i, route in enumerate(routes) if route == v]
            if picked:
                for i, value in zip(picked, call(scorer, [requests[i] for i in picked]), strict=True):
                    results[i] = value
        return results

    def fits(self, texts: Sequence[str], extra: int = 0) -> list[bool]:
        """As ``ScoringModel.fits`` (the variants are copies of one model: one context)."""
        return self.variants[0][0].fits(texts, extra)

    def token_stats(self, pairs, groups=None, moments: bool = False) -> list[TokenStats | None]:
        return self._dispatch(list(pairs), groups, lambda s, reqs: s.token_stats(reqs, moments=moments))

    def generate(self, prompts, max_new_tokens: int = 32, stop=("\n",), groups=None) -> list[str | None]:
        return self._dispatch(list(prompts), groups, lambda s, reqs: s.generate(reqs, max_new_tokens, stop))

    def generate_scored(self, prompts, answers, max_new_tokens: int = 32, stop=("\n",), groups=None) -> list:
        """As ``ScoringModel.generate_scored``; None for a request no variant may answer."""
        requests = list(zip(prompts, answers, strict=True))

        def call(scorer: ScoringModel, reqs: list) -> list:
            return scorer.generate_scored([r[0] for r in reqs], [r[1] for r in reqs], max_new_tokens, stop)

        return self._dispatch(requests, groups, call)

    @property
    def sequences_scored(self) -> int:
        return sum(s.sequences_scored for s, _ in self.variants)
