"""Time ``unlearn-audit demo`` (what ``make demo`` runs) as a new user meets it, and print the figures.

Usage: ``python bench/demo_time.py [--out DIR] [--cache-dir DIR] [demo options, e.g. --all ...]``

- a fresh output directory and, unless ``--cache-dir`` is given, an empty world
  cache: the shipped world models are installed, every method unlearned and
  audited (targets on 2 cores: 3 minutes for the default demo, 8 for ``--all``,
  10 for ``--preset adaptive``);
- then the same command again on the same output directory (models and audit
  pieces reused).

Each run is a separate process, as ``make demo`` starts it; the load average
(``os.getloadavg``) is printed beside each figure, since a busy machine is slower.
``--out`` keeps the demo's output (index, reports, ``leaderboard.md``) in a new directory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"default": 180.0, "--all": 480.0, "adaptive": 600.0}  # seconds on 2 cores; adaptive: --preset adaptive


def timed_demo(out: Path, cache: str, extra: list[str]) -> float:
    env = {**os.environ, "UNLEARN_AUDIT_CACHE": cache}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "auditor", "demo", "--out", str(out), *extra],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the demo output here (a new directory)")
    parser.add_argument("--cache-dir", type=Path, help="world cache (default: a new empty one)")
    args, extra = parser.parse_known_args()
    target = TARGETS["--all" if "--all" in extra else "adaptive" if "adaptive" in extra else "default"]
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(args.cache_dir or Path(tmp) / "cache")
        out = args.out or Path(tmp) / "demo"
        if out.exists():
            raise SystemExit(f"{out} exists; give a new directory")
        print(f"cpu cores: {os.cpu_count()}, demo options: {' '.join(extra) or '(defaults)'}, before: {load()}")
        first = timed_demo(out, cache, extra)
        verdict = "met" if first <= target else "NOT met"
        print(f"  first run: {first:7.1f} s  (target {target:.0f} s: {verdict}), {load()}")
        rerun = timed_demo(out, cache, extra)
        print(f"      rerun: {rerun:7.1f} s, {load()}")


if __name__ == "__main__":
    main()
