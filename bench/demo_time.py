"""Time ``unlearn-audit demo`` (what ``make demo`` runs) as a user meets it, and print the figures.

Usage: ``python bench/demo_time.py [--cold] [--out DIR] [--cache-dir DIR] [demo options ...]``

- with the world cached (``UNLEARN_AUDIT_CACHE``, built first when missing) and
  a fresh output directory: every method unlearned and audited (target: 3 minutes);
- ``--cold``: an empty world cache as well (a temporary one, or ``--cache-dir``
  when it does not hold the world yet, which keeps the world afterwards), so
  the world's models are trained too (target: 10 minutes);
- then the same command again on the same output directory (models and audit
  pieces reused).

Each run is a separate process, as ``make demo`` starts it. ``--out`` keeps the
demo's output (index, reports, ``leaderboard.md``) in a new directory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"cold": 600.0, "world cached": 180.0}


def timed_demo(out: Path, cache: str | None, extra: list[str]) -> float:
    env = {**os.environ, **({"UNLEARN_AUDIT_CACHE": cache} if cache else {})}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "auditor", "demo", "--out", str(out), *extra],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="start from an empty world cache")
    parser.add_argument("--out", type=Path, help="keep the demo output here (a new directory)")
    parser.add_argument("--cache-dir", type=Path, help="world cache (default: $UNLEARN_AUDIT_CACHE; --cold: temporary)")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(args.cache_dir) if args.cache_dir else os.environ.get("UNLEARN_AUDIT_CACHE")
        if args.cold:
            from auditor.world import WorldSpec
            from auditor.world.cache import cache_root

            cache = cache if args.cache_dir else str(Path(tmp) / "cache")
            if (cache_root(cache) / f"world-{WorldSpec().fingerprint()[:12]}").exists():
                raise SystemExit(f"{cache} already holds the world; --cold needs a cache without it")
        else:
            from auditor.world import build_world

            build_world(cache_dir=cache, retrains=(1,))  # cached before the clock starts
        label = "cold" if args.cold else "world cached"
        out = args.out or Path(tmp) / "demo"
        if out.exists():
            raise SystemExit(f"{out} exists; give a new directory")
        figures = {label: timed_demo(out, cache, extra), "rerun": timed_demo(out, cache, extra)}
    print(f"cpu cores: {os.cpu_count()}, demo options: {' '.join(extra) or '(defaults)'}")
    for name, seconds in figures.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else f"  (target {target:.0f} s: {'met' if seconds <= target else 'NOT met'})"
        print(f"{name:>13}: {seconds:7.1f} s{verdict}")


if __name__ == "__main__":
    main()
