"""The self-contained HTML report: one file, no scripts, no external resources, every model output escaped."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from reports.charts import curve_chart, heatmap, roc_charts
from reports.schema import validate_results
from reports.text import fmt, fmt_ci, show, visible
from reports.view import (
    VERDICT_COLOURS,
    attack_ids,
    bound_text,
    cell_map,
    cell_summary,
    judge,
    policy,
    probe_names,
)

MAX_ITEMS = 200  # recovered items shown; the rest stay in results.json
MEANINGS = {
    "NOT_UNLEARNED": "The unlearned model still gives the forgotten knowledge without any attack.",
    "HIDDEN": "The plain model looks clean, but attacks bring the knowledge back: it was hidden, not removed.",
    "REMOVED": "No attack and no probe recovered knowledge above the removed threshold: it looks removed.",
    "INCONCLUSIVE": "The evidence decides neither way: too few items, or intervals too wide.",
}
_OUTPUT_COLUMNS = {
    "original": "original O",
    "unlearned": "unlearned U",
    "attacked": "attacked U\u1d43",
    "reference": "reference Ref",
    "reference_attacked": "reference attacked Ref\u1d43",
}


def _pairs(mapping: Any) -> Markup:
    if not isinstance(mapping, dict) or not mapping:
        return Markup("")
    return show(
        "\n".join(f"{k} = {v if isinstance(v, str) else json.dumps(v, default=str)}" for k, v in mapping.items())
    )


def _pretty(value: Any) -> Markup:
    return show(json.dumps(value, indent=2, ensure_ascii=False, default=str))


@cache
def environment() -> Environment:
    """The Jinja2 environment of every HTML page: autoescape on for all templates."""
    env = Environment(
        loader=PackageLoader("reports", "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    env.filters.update(
        show=show, visible=visible, fmt=fmt, ci=fmt_ci, pairs=_pairs, pretty=_pretty, cell_summary=cell_summary
    )
    return env


def _output_columns(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    keys = list(dict.fromkeys(key for item in items for key in item["outputs"]))
    ordered = [k for k in _OUTPUT_COLUMNS if k in keys] + [k for k in keys if k not in _OUTPUT_COLUMNS]
    return [(key, _OUTPUT_COLUMNS.get(key, visible(key))) for key in ordered]


def _search_views(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per adaptive search: each configuration's cost, seconds and self-check per probe, and per probe each
    model's choice on each half (with its selection score) and the held-out residual of the cross-fitted cell."""
    cells = cell_map(results)
    probes = probe_names(results)
    views = []
    for search in results.get("searches") or []:
        per_probe = search["probes"]
        rows = []
        for config in search["configurations"]:
            checks = [
                (config["self_check"].get(p), config["id"] in per_probe.get(p, {}).get("eligible", [])) for p in probes
            ]
            seconds = sum((config.get("seconds") or {}).values())
            ran = sorted(config["status"])
            rows.append({"id": config["id"], "cost": config["cost"], "checks": checks, "seconds": seconds, "ran": ran})
        winners = []
        for probe in probes:
            choices = per_probe.get(probe, {}).get("choices", {})
            picks = {
                role: [
                    (config, (choice["scores"].get(config) or [None, None])[half] if config else None)
                    for half, config in enumerate(choice["chosen_on_half"])
                ]
                for role, choice in choices.items()
            }
            winners.append({"probe": probe, "picks": picks, "cell": cells.get((search["id"], probe))})
        views.append({**search, "rows": rows, "probes_shown": probes, "winners": winners})
    return views


def render_html(results: dict[str, Any]) -> str:
    """The report as one HTML document."""
    validate_results(results)
    pol = policy(results)
    verdict = results["verdict"]
    order = {(a, p): (i, j) for i, a in enumerate(attack_ids(results)) for j, p in enumerate(probe_names(results))}
    cells = sorted(results["cells"], key=lambda c: order.get((c["attack"], c["probe"]), (0, 0)))
    items = results["recovered_items"]
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            r=results,
            v=verdict,
            pol=pol,
            colour=VERDICT_COLOURS[verdict["label"]],
            meaning=MEANINGS[verdict["label"]],
            bound=bound_text(results),
            heat=heatmap(results),
            cells=[(cell, judge(results, cell)) for cell in cells],
            cells_by=cell_map(results),
            curves=[curve_chart(curve, pol["hidden"]) for curve in results["curves"] if curve["points"]],
            searches=_search_views(results),
            rocs=roc_charts(results),
            col=results.get("collateral"),
            items=items[:MAX_ITEMS],
            hidden_items=max(len(items) - MAX_ITEMS, 0),
            columns=_output_columns(items[:MAX_ITEMS]),
        )
    )
