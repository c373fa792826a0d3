"""A campaign's index page: one row per audited model linking to its report, and a checkpoint campaign's
trajectories."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from auditor.errors import UserError
from reports.html import environment
from reports.schema import validate_results
from reports.text import finite
from reports.trajectory import trajectory_charts
from reports.view import VERDICT_COLOURS, cell_map, max_residual

DIRECT = ("none", "qa")  # r(none, qa): what a naive evaluation sees


def _relative_href(href: str) -> str:
    """``href`` when it is a plain relative path; anything with a scheme, host or control character is refused."""
    parts = urlsplit(href)
    if (
        not href
        or parts.scheme
        or parts.netloc
        or href.startswith(("/", "\\"))
        or any(ch.isspace() or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in href)
    ):
        raise UserError(f"report link {href!r} must be a relative path")
    return href


def _row(entry: dict[str, Any]) -> dict[str, Any]:
    results = entry["results"]
    validate_results(results)
    verdict = results["verdict"]
    direct = cell_map(results).get(DIRECT)
    collateral = results.get("collateral") or {}
    return {
        "name": entry["name"],
        "href": _relative_href(entry["href"]),
        "label": verdict["label"],
        "colour": VERDICT_COLOURS[verdict["label"]],
        "gate_passed": verdict["gate_passed"],
        "controlled": results["controlled"],
        "direct": direct if direct and finite(direct.get("residual")) is not None else None,
        "top": max_residual(results),
        "collateral": collateral.get("drop"),
        "collateral_failed": collateral.get("failed", False),
    }


def render_index(entries: list[dict[str, Any]], checkpoints: bool = False, first: str = "method") -> str:
    """The index page; each entry is ``{"name", "href", "results"}`` with ``href`` relative to the page (and
    ``step`` when ``checkpoints``: the page then draws the trajectories). ``first``: what a row is."""
    rows = [_row(entry) for entry in entries]
    trajectories = trajectory_charts(entries) if checkpoints else []
    heading = (
        "Checkpoints compared"
        if checkpoints
        else ("Unlearning methods compared" if first == "method" else "Models compared")
    )
    return (
        environment()
        .get_template("index.html.j2")
        .render(rows=rows, trajectories=trajectories, heading=heading, first=first)
    )
