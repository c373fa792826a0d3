"""A campaign's leaderboard: what each model knows, and one summary row per audited model (the demo's is the
README's table)."""

from __future__ import annotations


def knowledge_table(known: dict[str, dict[str, dict]]) -> str:
    """``knowledge`` as a Markdown table of accuracies."""
    splits = list(next(iter(known.values())))
    lines = ["| model | " + " | ".join(f"{s} accuracy" for s in splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for name, per_split in known.items():
        lines.append(f"| {name} | " + " | ".join(f"{per_split[s]['accuracy']:.3f}" for s in splits) + " |")
    return "\n".join(lines)


def _membership(results: dict) -> set[str]:
    """The probes that compare members with non-members; every other probe asks for the knowledge itself."""
    return {probe["name"] for probe in results["probes"] if probe.get("membership")}


def _direct(results: dict, cells: list[dict]) -> dict | None:
    """The direct cell the verdict names (what a naive evaluation sees)."""
    where = tuple(results["verdict"].get("direct_cell") or ())
    return next((c for c in cells if (c["attack"], c["probe"]) == where), None)


def _worst(cells: list[dict]) -> dict | None:
    return max(cells, key=lambda c: c["residual"], default=None)


def _cell_text(cell: dict | None) -> str:
    return "n/a" if cell is None else f"{cell['residual']:.2f} ({cell['attack']} x {cell['probe']})"


def steps_text(info: dict) -> str:
    """How far the method went: optimiser steps, Ext-Sub's subtraction weight, or '-' for a fixed control."""
    if "steps" in info:
        return str(info["steps"])
    return f"lam {info['lam_used']:g}" if "lam_used" in info else "-"


def leaderboard_rows(entries: list[dict]) -> list[dict]:
    """One summary row per audited model: the strongest knowledge cell and text-membership cell apart; the
    forget/retain accuracy after unlearning and the steps where the model's ``unlearning.json`` says them."""
    rows = []
    for entry in entries:
        results = entry["results"]
        cells = [c for c in results["cells"] if c["residual"] is not None]
        direct = _direct(results, cells)
        membership = _membership(results)
        unlearning = entry.get("unlearning") or {}
        after = unlearning.get("after", {})
        rows.append(
            {
                "name": entry["name"],
                "step": entry.get("step"),
                "verdict": results["verdict"]["label"],
                "exit_code": results["verdict"]["exit_code"],
                "gate_passed": results["verdict"]["gate_passed"],
                "certified_bound": results["verdict"].get("certified_bound"),
                "r_direct": direct["residual"] if direct else None,
                "knowledge": _cell_text(_worst([c for c in cells if c["probe"] not in membership])),
                "membership": _cell_text(_worst([c for c in cells if c["probe"] in membership])),
                "collateral": results["collateral"]["drop"],
                "forget_after": after.get("forget", {}).get("accuracy"),
                "retain_after": after.get("retain", {}).get("accuracy"),
                "steps": steps_text(unlearning.get("info", {})),
                "report": entry["href"],
            }
        )
    return rows


def markdown_table(rows: list[dict], first: str = "method") -> str:
    """The leaderboard as a Markdown table (the README shows it)."""

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    lines = [
        f"| {first} | verdict | r(none, qa) | max knowledge residual (cell) | max text-membership residual (cell) "
        "| collateral | forget / retain accuracy after | steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['verdict']} | {num(r['r_direct'])} | {r['knowledge']} | {r['membership']} | "
            f"{r['collateral']:.1%} | {num(r['forget_after'])} / {num(r['retain_after'])} | {r['steps']} |"
        )
    return "\n".join(lines)


def attack_table(entries: list[dict], first: str = "method") -> str:
    """Per method, the direct probe's residual under each attack of the plan (Markdown): which attack exposes what."""
    attacks: list[str] = []
    probe = None
    by_method = []
    for entry in entries:
        cells = [c for c in entry["results"]["cells"] if c["residual"] is not None]
        direct = _direct(entry["results"], cells)
        probe = probe or (direct["probe"] if direct else None)
        residuals = {c["attack"]: c["residual"] for c in cells if direct and c["probe"] == direct["probe"]}
        attacks.extend(a for a in residuals if a not in attacks)
        by_method.append((entry["name"], residuals))
    lines = [
        f"| {first} | " + " | ".join(f"r({a}, {probe})" for a in attacks) + " |",
        "|---" * (len(attacks) + 1) + "|",
    ]
    for name, residuals in by_method:
        values = ("n/a" if residuals.get(a) is None else f"{residuals[a]:.2f}" for a in attacks)
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines)
