"""An attack that produced several models (relearning folds) as one scoring model: each request goes to a model
whose fine-tune never saw the request's subject."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from auditor.lm.scoring import ScoringModel
from auditor.lm.teacher_forcing import TokenStats


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

    def answer_ranks(self, pairs, groups=None) -> list[np.ndarray | None]:
        return self._dispatch(list(pairs), groups, lambda s, reqs: s.answer_ranks(reqs))

    def generate(self, prompts, max_new_tokens: int = 32, stop=("\n",), groups=None) -> list[str | None]:
        return self._dispatch(list(prompts), groups, lambda s, reqs: s.generate(reqs, max_new_tokens, stop))

    def generate_scored(
        self, prompts, answers, max_new_tokens: int = 32, stop=("\n",), groups=None, answer_margin=None
    ) -> list:
        """As ``ScoringModel.generate_scored``; None for a request no variant may answer."""
        requests = list(zip(prompts, answers, strict=True))

        def call(scorer: ScoringModel, reqs: list) -> list:
            return scorer.generate_scored(
                [r[0] for r in reqs], [r[1] for r in reqs], max_new_tokens, stop, answer_margin=answer_margin
            )

        return self._dispatch(requests, groups, call)

    @property
    def sequences_scored(self) -> int:
        return sum(s.sequences_scored for s, _ in self.variants)
