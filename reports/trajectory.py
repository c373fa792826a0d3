"""A checkpoint campaign's trajectories: per probe, against the training step, what a naive evaluation sees (the
probe on the model as given) and what the strongest attack recovers, each with its interval.

Where the two curves part, unlearning started hiding the knowledge instead of removing it. Numbers and plain
strings only: the index template draws the SVG and escapes every label.
"""

from __future__ import annotations

from typing import Any

from auditor.types import NO_ATTACK
from reports.text import finite, fmt, fmt_ci, visible

NO_EVIDENCE = ("self-check failed", "skipped")  # cells measured but not counted: never the strongest attack
SERIES = (("plain", "as given (no attack)", "#2166ac", False), ("attacked", "strongest attack", "#c0392b", True))
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 560, 260, 52, 18, 30, 216


def _plain_cell(cells: list[dict], probe: str) -> dict | None:
    return next((c for c in cells if c["attack"] == NO_ATTACK and c["probe"] == probe), None)


def _strongest_cell(cells: list[dict], probe: str) -> dict | None:
    attacked = [
        c
        for c in cells
        if c["probe"] == probe and c["attack"] != NO_ATTACK and finite(c.get("residual")) is not None
        if c.get("outcome") not in NO_EVIDENCE and c.get("status", "ok") == "ok"
    ]
    return max(attacked, key=lambda c: c["residual"], default=None)


def trajectory_points(entries: list[dict[str, Any]], probe: str) -> dict[str, list[dict[str, Any]]]:
    """Per series, one point per checkpoint (sorted by step) whose cell has a residual: step, residual, interval,
    attack and the checkpoint's name."""
    out: dict[str, list[dict[str, Any]]] = {"plain": [], "attacked": []}
    for entry in sorted(entries, key=lambda e: e["step"]):
        cells = entry["results"]["cells"]
        for series, cell in (("plain", _plain_cell(cells, probe)), ("attacked", _strongest_cell(cells, probe))):
            if cell is None or finite(cell.get("residual")) is None:
                continue
            out[series].append(
                {
                    "step": entry["step"],
                    "name": entry["name"],
                    "attack": cell["attack"],
                    "residual": cell["residual"],
                    "ci_low": finite(cell.get("ci_low")),
                    "ci_high": finite(cell.get("ci_high")),
                }
            )
    return out


def _probes(entries: list[dict[str, Any]]) -> list[str]:
    """The probes of the campaign's cells, in the order of the first checkpoint's cells."""
    return list(dict.fromkeys(c["probe"] for entry in entries for c in entry["results"]["cells"]))


def _y(value: float) -> float:
    return BOTTOM - min(max(value, 0.0), 1.0) * (BOTTOM - TOP)


def trajectory_charts(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One chart per probe with a residual at some checkpoint (entries need a ``step``)."""
    steps = sorted({entry["step"] for entry in entries})
    span = steps[-1] - steps[0]
    inner = (LEFT + 20, WIDTH - RIGHT - 20)

    def px(step: float) -> float:
        return (inner[0] + inner[1]) / 2 if not span else inner[0] + (step - steps[0]) / span * (inner[1] - inner[0])

    charts = []
    for probe in _probes(entries):
        points = trajectory_points(entries, probe)
        if not any(points.values()):
            continue
        series = []
        for index, (key, label, colour, dashed) in enumerate(SERIES):
            drawn = []
            for p in points[key]:
                interval = p["ci_low"] is not None and p["ci_high"] is not None
                title = f"{p['name']} (step {p['step']}), {p['attack']} x {probe}: residual {fmt(p['residual'])}"
                drawn.append(
                    {
                        "cx": px(p["step"]),
                        "cy": _y(p["residual"]),
                        "interval": interval,
                        "y_low": _y(p["ci_low"]) if interval else None,
                        "y_high": _y(p["ci_high"]) if interval else None,
                        "step": p["step"],
                        "value": p["residual"],
                        "title": visible(f"{title} {fmt_ci(p['ci_low'], p['ci_high'])}".rstrip()),
                    }
                )
            path = " ".join(f"{'M' if i == 0 else 'L'}{d['cx']:.1f},{d['cy']:.1f}" for i, d in enumerate(drawn))
            legend = {"x": LEFT + 10 + index * 200, "y": TOP - 12}
            series.append(
                {
                    "key": key,
                    "label": label,
                    "colour": colour,
                    "dashed": dashed,
                    "points": drawn,
                    "path": path,
                    "legend": legend,
                }
            )
        charts.append(
            {
                "probe": visible(probe),
                "width": WIDTH,
                "height": HEIGHT,
                "left": LEFT,
                "right": WIDTH - RIGHT,
                "top": TOP,
                "bottom": BOTTOM,
                "xticks": [{"x": px(step), "label": str(step)} for step in steps],
                "yticks": [{"y": _y(v), "label": f"{v:g}"} for v in (0, 0.25, 0.5, 0.75, 1)],
                "series": series,
            }
        )
    return charts
