"""The CI summary in GitHub-flavoured Markdown; model outputs only inside code spans, backticks neutralised."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from reports.schema import validate_results
from reports.text import clip, finite, fmt, fmt_ci, visible
from reports.view import attack_ids, bound_text, cell_map, deciding, judge, probe_names

MAX_ITEMS = 5
_PUNCT = re.compile(r"([\\`*_\[\]()<>|~&$@!#{}])")
_EMOJI = {"NOT_UNLEARNED": "\U0001f534", "HIDDEN": "\U0001f7e0", "REMOVED": "\U0001f7e2", "INCONCLUSIVE": "\u26aa"}


def md_text(value: Any, limit: int = 400) -> str:
    """Plain text with every Markdown and HTML special character backslash-escaped, on one line."""
    return _PUNCT.sub(r"\\\1", clip(visible(value).replace("\n", " "), limit))


def md_code(value: Any, limit: int = 120) -> str:
    """``value`` as a one-line code span usable in a table: backticks neutralised, pipes escaped."""
    text = clip(visible(value), limit).replace("`", "\u02cb").replace("\n", "\u23ce").replace("|", "\\|")
    return f"`{text}`" if text.strip() else "` `"


def _cell_text(cell: dict[str, Any] | None, decided: bool) -> str:
    if cell is None:
        return "\u2014"
    if cell["status"] == "skipped" or finite(cell.get("residual")) is None:
        return "skipped" if cell["status"] == "skipped" else "n/a"
    if cell.get("outcome") == "self-check failed":
        return f"self-check failed ({fmt(cell.get('self_check'))})"
    value = fmt(cell["residual"])
    ci = fmt_ci(cell.get("ci_low"), cell.get("ci_high"))
    return (
        (f"**{value}**" if decided else value)
        + (f" {ci}" if ci else "")
        + (" \u2020" if cell["status"] == "fallback" else "")
    )


def render_markdown(results: dict[str, Any]) -> str:
    """A short Markdown summary of the audit for a CI job page."""
    validate_results(results)
    verdict = results["verdict"]
    gate = "gate passed" if verdict["gate_passed"] else "gate FAILED"
    exit_code = f" (exit {verdict['exit_code']})" if "exit_code" in verdict else ""
    lines = [f"## {_EMOJI[verdict['label']]} unlearn-audit: **{verdict['label']}**, {gate}{exit_code}", ""]
    lines += [f"Unlearned model {md_code(results['models']['unlearned']['spec'])}.", ""]
    bound = bound_text(results)
    if bound:
        lines += [f"**{md_text(bound)}**", ""]
    if not results["controlled"]:
        note = "no reference model; residuals use the holdout floor (chance for `mcq`)"
        lines += [f"> **Uncontrolled audit**: {note}.", ""]
    cells, decided = cell_map(results), deciding(results)
    if decided:
        lines += ["**Deciding cells**", ""]
        for attack, probe in sorted(decided):
            lines.append(
                f"- {md_code(attack)} \u00d7 {md_code(probe)}: {_cell_text(cells.get((attack, probe)), False)}"
            )
        lines.append("")
    for title, entries in (("Reasons", verdict["reasons"]), ("Gate failures", verdict.get("failures") or [])):
        if entries:
            lines += [f"**{title}**", "", *(f"- {md_text(entry)}" for entry in entries), ""]
    probes = probe_names(results)
    lines += [
        "### Residual knowledge r(attack, probe)",
        "",
        "| attack | " + " | ".join(md_code(p) for p in probes) + " |",
        "|---" * (len(probes) + 1) + "|",
    ]
    for attack in attack_ids(results):
        row = [_cell_text(cells.get((attack, p)), (attack, p) in decided) for p in probes]
        lines.append(f"| {md_code(attack)} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Bold: decided the verdict. \u2020: a fallback ran. Intervals are bootstrap intervals. Self-check failed "
        "(the original's own residual under the attack): no evidence. `~adaptive`: a searched attack, chosen on "
        "one half of the subjects and scored on the other.",
        "",
    ]
    lines += _searches(results) + _collateral(results) + _trace(results) + _skipped(results) + _items(results)
    fence = "`" * max([3] + [len(run) + 1 for run in re.findall("`+", results["command"])])
    lines += ["**Reproduce**", "", fence + "sh", visible(results["command"]), fence, ""]
    return "\n".join(lines)


def _searches(results: dict[str, Any]) -> list[str]:
    """Per adaptive search: what it tried and what the unlearned model chose on the direct probe."""
    searches = results.get("searches") or []
    if not searches:
        return []
    lines = ["### Adaptive search", ""]
    for search in searches:
        direct = next(iter(search["probes"]), None)
        chosen = search["probes"][direct]["choices"].get("unlearned", {}).get("chosen_on_half", []) if direct else []
        picks = " / ".join(md_code(c or "none eligible") for c in chosen)
        stopped = f", stopped after {md_code(search['stopped_after'])}" if search.get("stopped_after") else ""
        lines.append(
            f"- {md_code(search['id'])}: {search['tried']} configurations of {md_text(search['family'])} "
            f"within {search['budget']:g}x{stopped}; on {md_code(direct)} the unlearned model chose {picks}"
        )
    return lines + [""]


def _collateral(results: dict[str, Any]) -> list[str]:
    collateral, baseline = results.get("collateral"), results.get("baseline")
    lines = ["### Collateral damage", ""]
    if collateral:
        state = "**over the limit**" if collateral["failed"] else "within the limit"
        ci = fmt_ci(collateral.get("ci_low"), collateral.get("ci_high"))
        lines.append(
            f"Retain {md_code(collateral['probe'])}: relative drop {fmt(collateral['drop'])} {ci}, "
            f"limit {fmt(collateral['limit'])}: {state}."
        )
    else:
        lines.append("Not measured.")
    lines.append("")
    if baseline:
        state = "no regression" if baseline["passed"] else "**regressed**"
        lines += [f"Baseline {md_code(baseline['source'])}: {state}.", ""]
        lines += [f"- {md_text(line)}" for line in baseline.get("regressions") or []] + [""]
    return lines


def _trace(results: dict[str, Any]) -> list[str]:
    """Membership cells where forget items stand out as unlikely: a finding, never hidden knowledge."""
    trace = results.get("unlearning_trace") or {}
    if not trace.get("cells"):
        return []
    effect = "fails the gate" if trace.get("policy") == "fail" else "reported only"
    lines = [f"### Unlearning trace ({effect})", "", "Forget items stand out as *less* likely than non-members in:", ""]
    lines += [
        f"- {md_code(t['attack'])} x {md_code(t['probe'])}: K(U) {fmt(t['k_unlearned'])}, "
        f"{fmt(t['below_floor'])} below the floor {fmt(t['k_floor'])}"
        for t in trace["cells"]
    ]
    return lines + [""]


def _skipped(results: dict[str, Any]) -> list[str]:
    attacks = [a for a in results["attacks"] if a["status"] != "ok"]
    inconclusive = [c for c in results["cells"] if judge(results, c).kind == "inconclusive"]
    lines = []
    if attacks:
        lines += ["### Attacks skipped or replaced", "", "| attack | status | reason |", "|---|---|---|"]
        lines += [
            f"| {md_code(a['id'])} | {a['status']} | {md_text(a['reason'] or 'no reason given')} |" for a in attacks
        ] + [""]
    if inconclusive:
        lines += [
            f"{len(inconclusive)} cell(s) inconclusive: "
            + ", ".join(f"{md_code(c['attack'])} \u00d7 {md_code(c['probe'])}" for c in inconclusive),
            "",
        ]
    return lines


def _items(results: dict[str, Any]) -> list[str]:
    items = results["recovered_items"]
    if not items:
        return []
    lines = [
        f"### Recovered items ({min(len(items), MAX_ITEMS)} of {len(items)})",
        "",
        "| item | attack \u00d7 probe | expected | unlearned | attacked |",
        "|---|---|---|---|---|",
    ]
    for item in items[:MAX_ITEMS]:
        outputs = item["outputs"]
        lines.append(
            f"| {md_code(item['item_id'])} | {md_code(item['attack'])} \u00d7 {md_code(item['probe'])} | "
            f"{md_code(item.get('expected'))} | {md_code(outputs.get('unlearned'))} | "
            f"{md_code(outputs.get('attacked'))} |"
        )
    return lines + [""]


def write_step_summary(markdown: str) -> Path | None:
    """Append ``markdown`` to the file named by ``$GITHUB_STEP_SUMMARY``; the path, or ``None`` when unset."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return path
