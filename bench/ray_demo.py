"""The demo run by Ray tasks against the local process pool: the same leaderboard and cells, and the time of each.

Usage: ``python bench/ray_demo.py [--all] [--jobs N] [--work DIR]``

Runs ``unlearn-audit demo`` twice from empty output folders (the embedded
world's shipped models cached under ``WORK/cache``): ``--engine local``, then
``--engine ray`` (a local Ray instance with ``--jobs`` CPUs, started by the
demo). Each run unlearns and audits every method itself. It prints each run's
wall seconds, whether the two ``leaderboard.md`` files are the same, and for
each method whether its verdict and every cell's residual and bounds agree.
Needs the ``ray`` extra (``make install`` installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CELL_FIELDS = ("residual", "ci_low", "ci_high")


def run_demo(engine: str, out: Path, extra: list[str]) -> float:
    start = time.perf_counter()
    command = [sys.executable, "-m", "auditor", "demo", "--engine", engine, "--out", str(out), *extra]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"failed (exit {run.returncode}): {' '.join(command)}\n{run.stderr[-3000:]}")
    return time.perf_counter() - start


def cells(out: Path) -> dict[str, dict]:
    """Per method: its verdict and each cell's figures, from its results.json."""
    found = {}
    for results_file in sorted(out.glob("*/results.json")):
        results = json.loads(results_file.read_text(encoding="utf-8"))
        figures = {f"{c['attack']} x {c['probe']}": [c.get(k) for k in CELL_FIELDS] for c in results["cells"]}
        found[results_file.parent.name] = {"verdict": results["verdict"]["label"], "cells": figures}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="Every bundled method (demo --all).")
    parser.add_argument("--jobs", type=int, default=2, help="Workers of each engine (default 2).")
    parser.add_argument("--work", type=Path, help="Working directory (default: a new temporary one).")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="ray-demo-"))
    os.environ.setdefault("UNLEARN_AUDIT_CACHE", str(work / "cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    extra = ["--jobs", str(args.jobs), *(["--all"] if args.all else [])]
    print(f"work: {work}\ncpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    outs = {engine: work / engine for engine in ("local", "ray")}
    for engine, out in outs.items():
        seconds = run_demo(engine, out, extra)
        print(f"demo {' '.join(extra)} --engine {engine}: {seconds:.1f} s (load average {os.getloadavg()[0]:.2f})")
    tables = {engine: (out / "leaderboard.md").read_text(encoding="utf-8") for engine, out in outs.items()}
    print(f"\nleaderboard.md identical: {tables['local'] == tables['ray']}")
    local, ray = cells(outs["local"]), cells(outs["ray"])
    print("\n| method | verdict (local / ray) | cells | cells that differ |\n|---|---|---|---|")
    for name in sorted(local.keys() | ray.keys()):
        a, b = local.get(name, {"verdict": "-", "cells": {}}), ray.get(name, {"verdict": "-", "cells": {}})
        differ = [k for k in a["cells"].keys() | b["cells"].keys() if a["cells"].get(k) != b["cells"].get(k)]
        print(f"| {name} | {a['verdict']} / {b['verdict']} | {len(a['cells'])} | {', '.join(sorted(differ)) or 0} |")
    print("\n" + tables["ray"])


if __name__ == "__main__":
    main()
