"""Run each bundled unlearning method's defaults on the embedded world and print a Markdown table.

Usage: ``UNLEARN_AUDIT_CACHE=... HF_HUB_OFFLINE=1 python bench/unlearning_methods.py [--threads N]
[METHOD[:k=v,...] ...]`` (no method: every registered one; 2 threads unless told; use 1 when other
jobs share the 2 cores, 2 contending threads are ~10x slower). The methods get the demo's data
(forget QA and notebook lines). Columns: QA accuracy on the forget and retain sets before/after
(greedy answer contains the true answer), the steps run (or Ext-Sub's subtraction weight) and why
the method stopped, wall seconds of ``unlearn``, and for the shallow presets and ``quant-hide`` the
forget accuracy of the 4-bit RTN copy (group 128, symmetric: the ``quant-rtn`` default).
"""

from __future__ import annotations

import sys
import time

import torch

from auditor.campaign.demo import world_data
from auditor.campaign.leaderboard import steps_text
from auditor.lm.knowledge import qa_accuracy
from auditor.lm.models import ModelSpec, load_model
from auditor.lm.quant import rtn_copy
from auditor.plugins import RunContext, parse_param_pairs
from auditor.registry import METHODS
from auditor.world import build_world

RTN_COLUMN = ("ga-kl-shallow", "npo-gd-shallow", "quant-hide", "noop")


def parse(arg: str) -> tuple[str, dict[str, str]]:
    name, _, params = arg.partition(":")
    return name, parse_param_pairs(params.split(",")) if params else {}


def main(argv: list[str]) -> None:
    threads = 2
    if argv[:1] == ["--threads"]:
        threads, argv = int(argv[1]), argv[2:]
    torch.set_num_threads(threads)
    world = build_world()
    original = load_model(ModelSpec(str(world.original)))
    data = world_data(world)
    forget, retain, ctx = data.forget, data.retain, RunContext(data)
    runs = [parse(a) for a in argv] or [(name, {}) for name in METHODS.names()]
    f0, r0 = qa_accuracy(original, forget), qa_accuracy(original, retain)
    q0 = qa_accuracy(rtn_copy(original), forget)
    print(f"original: forget {f0:.3f}, retain {r0:.3f}, 4-bit RTN forget {q0:.3f}", file=sys.stderr)
    print(
        "| method | forget before | forget after | retain before | retain after | steps | stopped | seconds "
        "| RTN-4 forget after |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, params in runs:
        method = METHODS.get(name)(**params)
        start = time.perf_counter()
        outcome = method.unlearn(original, forget, retain, ctx)
        seconds = time.perf_counter() - start
        f1, r1 = qa_accuracy(outcome.model, forget), qa_accuracy(outcome.model, retain)
        rtn = f"{qa_accuracy(rtn_copy(outcome.model), forget):.3f}" if name in RTN_COLUMN else ""
        label = method.spec if params else name
        info = outcome.info
        stop = info.get("stop_reason", "fixed recipe").split(":")[0]
        cells = f"{f0:.3f} | {f1:.3f} | {r0:.3f} | {r1:.3f} | {steps_text(info)} | {stop} | {seconds:.1f} | {rtn}"
        print(f"| {label} | {cells} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
