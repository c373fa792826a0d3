"""The orchestrator's early stop of the adaptive search: once a configuration brings back (nearly) all the
original knew, nothing stronger can show more."""

from __future__ import annotations

import numpy as np

from auditor.engine.adaptive import HALVES, half_value, known_floor, subject_halves
from auditor.engine.records import ScoreKey
from auditor.stats.residual import MIN_GAP
from auditor.types import AuditData, ProbeResult

RECOVERED = 0.9  # a search stops for a model once a configuration brings back this share of the original's knowledge


def recovered_on_both_halves(
    original: ProbeResult,
    floor: ProbeResult | None,
    attacked: list[ProbeResult],
    attacked_floor: list[ProbeResult] | None,
    halves: dict[str, int],
) -> bool:
    """Whether an attacked model brings back ``RECOVERED`` of the original's knowledge over its floor on each half
    (the floor: the reference's or the holdout's, plain and attacked; or the probe's known floor)."""
    for half in HALVES:
        plain_floor = known_floor(original, half, halves) if floor is None else half_value(floor, half, halves)
        if plain_floor is None:
            return False
        gap = half_value(original, half, halves) - plain_floor
        if not np.isfinite(gap) or gap <= MIN_GAP:
            return False
        values = [half_value(r, half, halves) for r in attacked]
        floors = (
            [half_value(r, half, halves) for r in attacked_floor] if attacked_floor else [plain_floor] * len(values)
        )
        recovered = np.mean([v - f for v, f in zip(values, floors, strict=True)]) / gap
        if not recovered >= RECOVERED:
            return False
    return True


class EarlyStop:
    """Which configurations the unlearned model's searches still need: a search stops for it once a configuration
    brought back ``RECOVERED`` of the original's knowledge on both halves of the direct probe (nothing stronger
    can show more). A planned configuration always runs; the original and the reference run every one."""

    def __init__(self, plan, data: AuditData, seed: int, results: dict, floors: dict):
        self.plan, self.results, self.floors = plan, results, floors
        self.halves = subject_halves(data, seed)
        self.probe = next(iter(plan.roles().direct), None)
        self.stopped: dict[str, str] = {}  # search id -> the configuration that stopped it

    def skips(self, config_id: str) -> bool:
        if any(p.id == config_id for p in self.plan.attacks):
            return False
        searching = [s for s in self.plan.searches if any(c.id == config_id for c in s.configs)]
        return bool(searching) and all(s.id in self.stopped for s in searching)

    def update(self, planned) -> None:
        """Stop every search of ``planned`` that it completes."""
        if self.probe is None:
            return
        for search in self.plan.searches:
            ran_here = search.id not in self.stopped and any(c.id == planned.id for c in search.configs)
            if ran_here and self._recovered(planned, self.probe):
                self.stopped[search.id] = planned.id

    def _recovered(self, planned, probe: str) -> bool:
        res = self.results
        seeds = self.plan.seeds_for(planned)
        attacked = [res.get(ScoreKey("unlearned", planned.id, s, probe)) for s in seeds]
        original = res.get(ScoreKey.plain("original", probe))  # absent in a piece run alone (``run_piece``)
        if original is None or any(r is None or r.status != "ok" for r in attacked):
            return False
        floor: ProbeResult | None = None
        attacked_floor: list[ProbeResult | None] | None = None
        if ScoreKey.plain("reference", probe) in res:
            floor = res[ScoreKey.plain("reference", probe)]
            attacked_floor = [res.get(ScoreKey("reference", planned.id, s, probe)) for s in seeds]
        elif known_floor(original, HALVES[0], self.halves) is None:  # no known floor: the holdout's
            floor = self.floors.get(ScoreKey.plain("original", probe))
            attacked_floor = [self.floors.get(ScoreKey("unlearned", planned.id, s, probe)) for s in seeds]
        if attacked_floor is not None and (floor is None or any(r is None for r in attacked_floor)):
            return False
        return recovered_on_both_halves(original, floor, attacked, attacked_floor, self.halves)  # type: ignore[arg-type]  # None excluded above
