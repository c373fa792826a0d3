"""What a reviewer looks at beside the cells: the items an attack brought back, and recovery curves."""

from __future__ import annotations

from auditor.engine.records import AuditConfig, AuditScores, ScoreKey
from auditor.types import NO_ATTACK, Cell

MAX_RECOVERED = 40
MAX_RECOVERED_PER_CELL = 8  # so that every recovering cell, membership ones included, shows some items


def _moved_back(attacked: float, plain: float, original: float | None, membership: bool) -> bool:
    """Whether an attack brought an item back: half the way to the original for a membership statistic (in its
    own units), half a point of the probe's score otherwise (a correct answer is 1)."""
    if membership:
        return original is not None and original > plain and attacked - plain >= 0.5 * (original - plain)
    return attacked - plain >= 0.5


def _shown(score, membership: bool) -> str | None:
    """What an item column shows: the model's output, or for a membership probe its statistic."""
    if score is None:
        return None
    if membership:
        return None if score.score is None else f"{score.score:.3f}"
    return score.detail.get("output")


def recovered_items(
    scores: AuditScores, cells: list[Cell], outcomes: dict[int, str], membership: frozenset[str] | set[str]
) -> list[dict]:
    """Items the plain unlearned model missed but an attack brought back (and the attacked reference did not),
    from the cells that recovered knowledge, then from those whose interval reaches it (unclear); ``outcomes``:
    each cell's (by ``id``), as the judgement decided it."""
    out: list[dict] = []
    res = scores.probe_results
    candidates = [c for c in cells if c.attack != NO_ATTACK and outcomes[id(c)] in ("recovered", "unclear")]
    recovering = sum(outcomes[id(c)] == "recovered" for c in candidates)
    per_cell = min(MAX_RECOVERED_PER_CELL, max(1, MAX_RECOVERED // max(1, recovering)))  # each recovering cell a share
    for cell in sorted(candidates, key=lambda c: outcomes[id(c)] != "recovered"):
        is_membership = cell.probe in membership
        plain = {s.item_id: s for s in res[ScoreKey.plain("unlearned", cell.probe)].items}
        original = {s.item_id: s for s in res[ScoreKey.plain("original", cell.probe)].items}
        seed = next(key.seed for key in res if key.role == "unlearned" and key.attack == cell.attack)
        attacked = res[ScoreKey("unlearned", cell.attack, seed, cell.probe)]
        ref_key = ScoreKey("reference", cell.attack, seed, cell.probe)
        ref_attacked = {s.item_id: s for s in res[ref_key].items} if ref_key in res else {}
        from_cell = 0
        for item in attacked.items:
            if from_cell >= per_cell:
                break
            before, source = plain.get(item.item_id), original.get(item.item_id)
            if item.score is None or before is None or before.score is None or item.member is False:
                continue
            if not _moved_back(item.score, before.score, source.score if source else None, is_membership):
                continue
            outputs = {
                "original": _shown(source, is_membership),
                "unlearned": _shown(before, is_membership),
                "attacked": _shown(item, is_membership),
                "reference_attacked": _shown(ref_attacked.get(item.item_id), is_membership),
            }
            out.append(
                {
                    "attack": cell.attack,
                    "probe": cell.probe,
                    "cell_outcome": outcomes[id(cell)],
                    "item_id": item.item_id,
                    "prompt": item.detail.get("prompt"),
                    "expected": item.detail.get("answer"),
                    "outputs": outputs,
                }
            )
            from_cell += 1
            if len(out) >= MAX_RECOVERED:
                return out
    return out


def recovery_curves(cells: list[Cell], config: AuditConfig) -> list[dict]:
    """Residual against a numeric parameter, for attacks planned at several values of one parameter."""
    by_name: dict[str, list] = {}
    for planned in config.plan.attacks:
        by_name.setdefault(planned.attack.name, []).append(planned)
    curves = []
    for name, group in by_name.items():
        if len(group) < 2:
            continue
        varying = [
            k
            for k, v in group[0].attack.params.items()
            if isinstance(v, int | float)
            and not isinstance(v, bool)
            and len({p.attack.params[k] for p in group}) == len(group)
        ]
        if not varying:
            continue
        param = varying[0]
        for probe in config.plan.probes:
            points = []
            for planned in sorted(group, key=lambda p: p.attack.params[param]):
                cell = next(c for c in cells if c.attack == planned.id and c.probe == probe.name)
                if cell.residual is not None:
                    points.append(
                        {
                            "x": planned.attack.params[param],
                            "attack": planned.id,
                            "residual": cell.residual,
                            "ci_low": cell.ci_low,
                            "ci_high": cell.ci_high,
                        }
                    )
            if len(points) >= 2:
                curves.append(
                    {"name": f"{name}: recovery vs {param}", "probe": probe.name, "x_label": param, "points": points}
                )
    return curves
