"""Scaling: one `core` audit and one campaign of three models on the embedded world, run by the local engine and
by Ray with 1 and 2 workers; the seconds of each and whether every verdict and cell equals the local run's.

Usage: ``python bench/campaign.py [--work DIR] [--runs local:1,ray:1,ray:2] [--skip-campaign]``

Each run is the CLI from an empty output folder (``unlearn-audit audit``/``campaign --engine E --jobs N``), the
world's shipped models cached under ``WORK/cache``; the models are the `noop`, `idk` and `retrain` controls,
unlearned once into ``WORK/models``. A Ray run starts its own local Ray instance (a few seconds, counted). The
load average is printed beside each figure. Needs the ``ray`` extra (``make install`` installs it).
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

CONTROLS = ("noop", "idk", "retrain")


def make_models(work: Path) -> tuple[object, Path]:
    """The world and the folder of the three controls (each unlearned once)."""
    from auditor.campaign.demo import UnlearnJob, unlearn_method, world_data
    from auditor.lm.quiet import quiet_libraries
    from auditor.world import build_world

    quiet_libraries()
    world = build_world(retrains=(1,), progress=lambda _: None)
    data = world_data(world)
    for name in CONTROLS:
        unlearn_method(UnlearnJob(name, world.original, data, work / "models" / name), log=print)
    return world, work / "models"


def run(command: list[str], out: Path) -> tuple[float, float, int]:
    """Seconds, the load average before, and the exit code of one CLI run."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "auditor", *command, "--out", str(out)], capture_output=True, text=True
    )
    if done.returncode not in (0, 1, 3):
        sys.exit(f"failed (exit {done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, load, done.returncode


def cells(results_file: Path) -> dict:
    results = json.loads(results_file.read_text(encoding="utf-8"))
    return {"verdict": results["verdict"]["label"], "cells": results["cells"]}


def compare(first: dict, other: dict) -> str:
    """Whether verdicts and cells are the same, bit for bit, or the largest residual difference."""
    if first == other:
        return "verdicts and cells identical"
    verdicts = all(first[k]["verdict"] == other[k]["verdict"] for k in first)
    gaps = [
        abs((a["residual"] or 0) - (b["residual"] or 0))
        for k in first
        for a, b in zip(first[k]["cells"], other[k]["cells"], strict=True)
    ]
    return f"verdicts {'equal' if verdicts else 'DIFFER'}; cells differ, at most {max(gaps):.4f} in a residual"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="Working directory (default: a new temporary one).")
    parser.add_argument("--runs", default="local:1,ray:1,ray:2", help="ENGINE:JOBS,... (default: %(default)s).")
    parser.add_argument("--skip-campaign", action="store_true", help="Only the single audit.")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="campaign-bench-"))
    os.environ.setdefault("UNLEARN_AUDIT_CACHE", str(work / "cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    world, models = make_models(work)
    print(f"work: {work}\ncpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    data = [arg for name in ("forget", "retain", "holdout") for arg in (f"--{name}", str(world.file(name)))]
    data += ["--multihop", str(world.file("forget_multihop")), "--forget-texts", str(world.file("forget_notebook"))]
    data += ["--holdout-texts", str(world.file("holdout_notebook")), "--preset", "core"]
    shared = ["--original", str(world.original), "--reference", str(world.reference), *data]
    tasks = {"audit": ["audit", *shared, "--unlearned", str(models / "idk")]}
    if not args.skip_campaign:
        tasks["campaign"] = ["campaign", *shared, *(a for n in CONTROLS for a in ("--unlearned", f"{n}={models / n}"))]
    for task, command in tasks.items():
        first, seconds_of = None, {}
        for spec in args.runs.split(","):
            engine, jobs = spec.split(":")
            out = work / f"{task}-{engine}-{jobs}"
            seconds, load, code = run([*command, "--engine", engine, "--jobs", jobs], out)
            seconds_of[spec] = seconds
            found = {str(p.parent.relative_to(out)): cells(p) for p in sorted(out.glob("**/results.json"))}
            verdicts = ", ".join(f"{k}: {v['verdict']}" if k != "." else v["verdict"] for k, v in found.items())
            same = "(the first run)" if first is None else compare(first, found)
            timing = f"{seconds:.1f} s (load {load:.2f}), exit {code}"
            print(f"{task} --engine {engine} --jobs {jobs}: {timing}; {verdicts}; {same}")
            first = first or found
        base = next(iter(seconds_of.values()))
        print(f"{task}: " + ", ".join(f"{k} {v / base:.2f}x" for k, v in seconds_of.items()) + " of the first run")


if __name__ == "__main__":
    main()
