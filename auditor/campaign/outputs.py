"""A campaign's own files: ``leaderboard.md``, ``leaderboard.json`` and ``index.html`` (with the trajectories of a
checkpoint campaign), written once every audit has finished."""

from __future__ import annotations

from pathlib import Path

from auditor.campaign.campaign import worst_exit_code
from auditor.campaign.leaderboard import attack_table, leaderboard_rows, markdown_table
from auditor.files import atomic_write, write_json_atomic


def write_campaign_outputs(out_dir: Path, entries: list[dict], checkpoints: bool, first: str = "model") -> str:
    """Write the three files; the Markdown leaderboard (a row per model, then each attack's direct residual).
    ``first``: what a row is (``method`` in the demo)."""
    from reports.index import render_index

    rows = leaderboard_rows(entries)
    table = markdown_table(rows, first) + "\n\n" + attack_table(entries, first)
    summary = {"exit_code": worst_exit_code(entries), "checkpoints": checkpoints, "models": rows}
    atomic_write(out_dir / "leaderboard.md", table + "\n")
    write_json_atomic(out_dir / "leaderboard.json", summary)
    atomic_write(out_dir / "index.html", render_index(entries, checkpoints, first))
    return table
