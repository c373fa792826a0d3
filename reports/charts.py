"""Geometry for the report's inline SVG charts: numbers and plain strings only.

The templates draw the SVG and autoescape every label, so nothing here builds markup.
"""

from __future__ import annotations

from typing import Any

from auditor.types import NO_ATTACK
from reports.text import clip, finite, fmt, fmt_ci, visible
from reports.view import attack_ids, cell_map, cell_summary, deciding, policy, probe_names, self_check_text

_RAMP = (
    (0.0, (255, 247, 236)),
    (0.25, (253, 212, 158)),
    (0.5, (252, 141, 89)),
    (0.75, (215, 48, 31)),
    (1.0, (127, 0, 0)),
)  # white to dark red: residual knowledge 0 -> 1
SELF_CHECK_FILL = "#eceff1"  # a cell whose attack failed its self-check: measured, but no evidence
MODEL_COLOURS = {"original": "#404040", "unlearned": "#c0392b", "reference": "#2166ac"}
_CHAR_W = 7.2  # average width of a 13px sans-serif character


def residual_colour(value: float) -> str:
    """The heatmap fill for a residual in [0, 1]."""
    value = min(max(value, 0.0), 1.0)
    for (x0, c0), (x1, c1) in zip(_RAMP, _RAMP[1:], strict=False):
        if value <= x1:
            t = (value - x0) / (x1 - x0)
            return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(c0, c1, strict=True))
    return "#7f0000"


def _k_line(cell: dict[str, Any]) -> str:
    names = (
        ("k_original", "original"),
        ("k_unlearned", "unlearned (attacked)"),
        ("k_reference", "reference"),
        ("k_reference_attacked", "reference (attacked)"),
    )
    return "K: " + ", ".join(f"{label} {fmt(cell.get(key))}" for key, label in names)


def _heat_row(attack: str, info: dict[str, Any], y: float, label_chars: int) -> dict[str, Any]:
    """One attack's row label, with its summary (and why it did not run) as the hover text; an adaptive search's
    row (``info["search"]``) is marked and says what it tried."""
    search = info.get("search")
    if search:
        title = visible(
            f"{attack}: adaptive search over {search['tried']} configurations of the {search['family']} family, "
            "each model's chosen on one half of the subjects and scored on the other"
        )
        return {"y": y, "label": visible("\u21bb " + clip(attack, label_chars - 2)), "title": title, "muted": False}
    title = visible(f"{attack}: {info.get('summary') or info.get('attack') or ''}")
    if info.get("status", "ok") != "ok":
        title += visible(f"\n{info['status']}: {info.get('reason') or 'no reason given'}")
    return {
        "y": y,
        "label": visible(clip(attack, label_chars)),
        "title": title,
        "muted": info.get("status") == "skipped",
    }


def _heat_legend(x: float, width: float, limits: dict[str, Any], steps: int = 60) -> tuple[list[dict], list[dict]]:
    """The colour scale's swatches and its ticks at 0, the removal and hidden thresholds, and 1."""
    legend = [
        {"x": x + k * width / steps, "w": width / steps + 0.5, "fill": residual_colour(k / (steps - 1))}
        for k in range(steps)
    ]
    ticks = [
        {"x": x + v * width, "label": f"{v:g}", "name": name}
        for v, name in ((0.0, ""), (limits["removed"], "removed"), (limits["hidden"], "hidden"), (1.0, ""))
    ]
    return legend, ticks


def heatmap(results: dict[str, Any]) -> dict[str, Any]:
    """Attack x probe grid of residual knowledge with intervals; skipped cells hatched."""
    attacks, probes, cells, decided = attack_ids(results), probe_names(results), cell_map(results), deciding(results)
    status = {attack["id"]: attack for attack in results.get("attacks", [])}
    status |= {search["id"]: {"search": search} for search in results.get("searches") or []}
    col_w, row_h, head_h = 132, 48, 36
    longest = max((len(a) + 2 * (a in status and "search" in status[a]) for a in attacks), default=8)
    label_w = int(min(max(longest * _CHAR_W + 24, 120), 300))
    label_chars, head_chars = int((label_w - 20) / _CHAR_W), int((col_w - 10) / _CHAR_W)
    rows, grid = [], []
    for i, attack in enumerate(attacks):
        y = head_h + i * row_h
        rows.append(_heat_row(attack, status.get(attack, {}), y + row_h / 2, label_chars))
        for j, probe in enumerate(probes):
            x = label_w + j * col_w
            cell = cells.get((attack, probe))
            grid.append(_heat_cell(results, cell, attack, probe, x, y, col_w, row_h, (attack, probe) in decided))
    cols = [
        {"x": label_w + j * col_w + col_w / 2, "label": visible(clip(p, head_chars)), "title": visible(p)}
        for j, p in enumerate(probes)
    ]
    legend_y = head_h + len(attacks) * row_h + 18
    legend_w = 300
    legend, ticks = _heat_legend(label_w, legend_w, policy(results))
    return {
        "width": label_w + max(len(probes) * col_w, legend_w + 40) + 8,
        "height": legend_y + 54,
        "label_w": label_w,
        "head_h": head_h,
        "rows": rows,
        "cols": cols,
        "cells": grid,
        "legend": legend,
        "legend_x": label_w,
        "legend_y": legend_y,
        "legend_w": legend_w,
        "ticks": ticks,
    }


def _heat_cell(
    results: dict[str, Any],
    cell: dict[str, Any] | None,
    attack: str,
    probe: str,
    x: float,
    y: float,
    w: float,
    h: float,
    decided: bool,
) -> dict[str, Any]:
    box = {"x": x + 2, "y": y + 2, "w": w - 4, "h": h - 4, "cx": x + w / 2, "cy": y + h / 2, "deciding": decided}
    head = visible(f"{attack} \u00d7 {probe}")
    if cell is None:
        return {**box, "kind": "missing", "main": "\u2014", "sub": "not measured", "title": f"{head}\nnot measured"}
    residual = finite(cell.get("residual"))
    lines = [head]
    if cell["status"] == "skipped" or residual is None:
        lines.append(visible(f"{cell['status']}: {cell.get('note') or 'no residual measured'}"))
        return {
            **box,
            "kind": "skipped",
            "main": "skipped" if cell["status"] == "skipped" else "n/a",
            "sub": "",
            "title": "\n".join(lines),
        }
    lines += [cell_summary(cell), _k_line(cell)]
    failed = cell.get("outcome") == "self-check failed"
    if failed:
        lines.append(self_check_text(cell))
    elif cell.get("self_check") is not None:
        lines.append(f"self-check: the original attacked this way kept {fmt(cell['self_check'])} of its knowledge")
    if cell["status"] == "fallback":
        lines.append(visible(f"fallback: {cell.get('note') or 'no reason given'}"))
    elif cell.get("note"):
        lines.append(visible(cell["note"]))
    if not cell.get("controlled", True):
        lines.append("uncontrolled: floor from the holdout set (chance for mcq), not a reference model")
    if decided:
        lines.append("decided the verdict")
    mark = "\u2020" if cell["status"] == "fallback" else ""
    return {
        **box,
        "kind": "value",
        "fill": SELF_CHECK_FILL if failed else residual_colour(residual),
        "dark": residual > 0.55 and not failed,
        "main": fmt(residual) + mark,
        "sub": "self-check failed" if failed else fmt_ci(cell.get("ci_low"), cell.get("ci_high")),
        "title": "\n".join(lines),
    }


def _y(value: float, top: float, bottom: float) -> float:
    return bottom - value * (bottom - top)


def curve_chart(curve: dict[str, Any], hidden: float) -> dict[str, Any]:
    """One recovery curve: residual with interval bars against the attack's strength."""
    width, height, left, right, top, bottom = 440, 250, 52, 18, 14, 206
    points = sorted(curve["points"], key=lambda p: p["x"])
    xs = sorted({p["x"] for p in points})
    span = (xs[-1] - xs[0]) if len(xs) > 1 else 0
    inner = (left + 20, width - right - 20)

    def px(x: float) -> float:
        return (inner[0] + inner[1]) / 2 if not span else inner[0] + (x - xs[0]) / span * (inner[1] - inner[0])

    drawn: list[dict[str, Any]] = []
    path: list[str] = []
    for point in points:
        residual, low, high = (finite(point.get(k)) for k in ("residual", "ci_low", "ci_high"))
        entry: dict[str, Any] = {
            "cx": px(point["x"]),
            "title": visible(f"{point['attack']} ({curve['x_label']} {point['x']:g}): "),
        }
        if residual is None:
            drawn.append({**entry, "cy": bottom, "skipped": True, "title": entry["title"] + "not measured"})
            continue
        entry.update(cy=_y(residual, top, bottom), skipped=False, interval=low is not None and high is not None)
        entry["title"] += f"residual {fmt(residual)} {fmt_ci(low, high)}".rstrip()
        if low is not None and high is not None:
            entry.update(y_low=_y(low, top, bottom), y_high=_y(high, top, bottom))
        drawn.append(entry)
        path.append(f"{'M' if not path else 'L'}{entry['cx']:.1f},{entry['cy']:.1f}")
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "top": top,
        "bottom": bottom,
        "title": visible(f"{curve['name']} ({curve['probe']})"),
        "x_label": visible(curve["x_label"]),
        "xticks": [{"x": px(x), "label": f"{x:g}"} for x in xs],
        "yticks": [{"y": _y(v, top, bottom), "label": f"{v:g}"} for v in (0, 0.25, 0.5, 0.75, 1)],
        "hidden_y": _y(hidden, top, bottom),
        "hidden": f"{hidden:g}",
        "points": drawn,
        "path": " ".join(path),
    }


def _roc_points(roc: Any, limit: int = 400) -> list[tuple[float, float]]:
    if not isinstance(roc, dict) or not isinstance(roc.get("fpr"), list) or not isinstance(roc.get("tpr"), list):
        return []
    read = [(finite(f), finite(t)) for f, t in zip(roc["fpr"], roc["tpr"], strict=False)]
    pairs = [(f, t) for f, t in read if f is not None and t is not None and 0 <= f <= 1 and 0 <= t <= 1]
    if len(pairs) > limit:
        stride = -(-len(pairs) // limit)
        pairs = pairs[::stride] + [pairs[-1]]
    return pairs if len(pairs) >= 2 else []


AGGREGATE_LABELS = {"gap": "gap", "std_gap": "d"}  # how a membership value that is not an AUC is named


def roc_legend(score: dict[str, Any], probe: dict[str, Any]) -> str:
    """The AUC of the plotted statistic, then the probe's value under its own name when that is not the AUC."""
    auc = ((score.get("extras") or {}).get("auc") or {}).get(probe.get("metric", ""))
    aggregate = probe.get("aggregate", "auc")
    if aggregate == "auc":
        return f"AUC {fmt(score.get('value'))}"
    return f"AUC {fmt(auc)}, {AGGREGATE_LABELS.get(aggregate, aggregate)} {fmt(score.get('value'))}"


def roc_charts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Membership-inference ROC curves, one chart per (probe, attack), one line per model."""
    size, left, pad = 270, 44, 12
    plot = size - left - pad
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for score in results.get("scores", []):
        points = _roc_points((score.get("extras") or {}).get("roc"))
        if points:
            groups.setdefault((score["probe"], score["attack"]), {})[score["model"]] = {**score, "points": points}
    order = {a: i for i, a in enumerate(attack_ids(results))}
    probes = {p["name"]: p for p in results.get("probes", [])}
    charts = []
    for (probe, attack), by_model in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 1e9))):
        if attack != NO_ATTACK and "original" not in by_model and "original" in groups.get((probe, NO_ATTACK), {}):
            by_model = {"original": groups[(probe, NO_ATTACK)]["original"], **by_model}
        series = []
        for k, (model, score) in enumerate(by_model.items()):
            coords = " ".join(f"{left + f * plot:.1f},{pad + (1 - t) * plot:.1f}" for f, t in score["points"])
            name = model if attack == NO_ATTACK or model == "original" else f"{model} (attacked)"
            series.append(
                {
                    "points": coords,
                    "colour": MODEL_COLOURS.get(model, "#762a83"),
                    "dash": k >= 3,
                    "label": visible(f"{name}  {roc_legend(score, probes.get(probe, {}))}"),
                    "ly": pad + plot + 48 + 15 * k,
                }
            )
        charts.append(
            {
                "title": visible(f"{probe} \u00d7 {attack}"),
                "size": size,
                "left": left,
                "top": pad,
                "plot": plot,
                "height": pad + plot + 40 + 15 * len(series),
                "series": series,
            }
        )
    return charts
