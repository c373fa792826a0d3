"""Regenerate ``docs/results-example.json`` from a real audit (``make results-example``).

The embedded world's ``quant-hide`` control (unlearning confined to the original's 4-bit bins)
is unlearned and audited on its first 30 forget subjects through the command line: RTN at 8, 4
and 3 bits (a recovery curve) with ``qa``, ``mia`` and ``verbatim``. No passages are given, so the
verbatim cells are skipped, every time, on every machine. Paths in the example are the relative
names the run used (``original``, ``forget.jsonl``, ...).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from auditor.files import atomic_write
from auditor.world import build_world

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = 30
AUDIT = [
    "audit",
    *("--original", "original", "--unlearned", "unlearned", "--reference", "reference"),
    *("--forget", "forget.jsonl", "--retain", "retain.jsonl", "--holdout", "holdout.jsonl"),
    *("--attack", "quant-rtn:bits=8", "--attack", "quant-rtn:bits=4", "--attack", "quant-rtn:bits=3"),
    *("--probe", "qa", "--probe", "mia", "--probe", "verbatim"),
    *("--out", "audit"),
]


def first_subjects(source: Path, target: Path, n: int) -> None:
    """Copy the items of the first ``n`` subjects (``group``) of a QA file."""
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    groups = list(dict.fromkeys(row["group"] for row in rows))[:n]
    target.write_text("".join(json.dumps(row) + "\n" for row in rows if row["group"] in set(groups)))


def cli(work: Path, *args: str) -> int:
    """Run ``unlearn-audit`` in ``work``; its own output goes to the terminal."""
    print("$ unlearn-audit " + " ".join(args), flush=True)
    return subprocess.run([Path(sys.executable).with_name("unlearn-audit"), *args], cwd=work).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results-example.json")
    args = parser.parse_args()
    world = build_world()
    with tempfile.TemporaryDirectory(prefix="results-example-") as tmp:
        work = Path(tmp)
        for name in ("forget", "retain", "holdout"):
            first_subjects(world.file(name), work / f"{name}.jsonl", SUBJECTS)
        for name in ("original", "reference"):
            (work / name).symlink_to(getattr(world, name), target_is_directory=True)
        unlearn = ["unlearn", "--method", "quant-hide", "--model", "original"]
        if cli(work, *unlearn, "--forget", "forget.jsonl", "--retain", "retain.jsonl", "--out", "unlearned") != 0:
            return 1
        code = cli(work, *AUDIT)
        if code not in (0, 1, 3):  # a gate outcome, not an error
            return code
        atomic_write(args.out, (work / "audit" / "results.json").read_text())
    print(f"wrote {args.out} (audit exit code {code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
