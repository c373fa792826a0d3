"""Audits on the embedded world that need no demo: the adaptive search's known answers, determinism, resume, no
reference, a collapsed ascent (apart from test_audit.py, so that the two run in parallel)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import audit_world, show_cells, world_data_args

from auditor.campaign.unlearn_runner import unlearn_to_dir
from auditor.engine.plan import make_plan
from auditor.engine.records import AuditConfig
from auditor.lm.models import load_model
from auditor.plugins import RunContext
from auditor.registry import METHODS
from auditor.types import ModelSpec

pytestmark = pytest.mark.slow  # every test here audits models of the embedded world


@pytest.fixture(scope="module")
def searched_cache(tmp_path_factory):
    """The pieces of the original and the reference under the search, shared by the adaptive tests."""
    return tmp_path_factory.mktemp("searched-cache")


# Core's families searched within 4x their cost, with a probe of each kind: what the adaptive tests audit.
SEARCHED = {"attacks": ("quant-rtn:bits=4", "relearn-forget"), "probes": ("qa", "paraphrase", "mia"), "budget": 4.0}


def test_a_hiding_only_a_search_finds_is_hidden_to_the_adaptive_audit_alone(
    world, data, controls, searched_cache, tmp_path
):
    """quant-hide-3bit stays inside the original's 3-bit bins: the planned 4-bit RTN and relearning do not bring it
    back (core: not HIDDEN, test_audit.py); the quantization search's 3-bit configuration does, cross-fitted, and
    the planned 4-bit cells of the same audit still show nothing."""
    model = controls["quant-hide-3bit"]
    searched = audit_world(world, data, model, tmp_path / "searched", searched_cache, "core", **SEARCHED)
    assert searched["verdict"]["label"] == "HIDDEN", show_cells(searched)
    deciding = {tuple(c) for c in searched["verdict"]["deciding_cells"]}
    assert deciding and {attack for attack, _ in deciding} == {"quant-rtn:bits=4~adaptive"}, show_cells(searched)
    quantization = next(s for s in searched["searches"] if s["family"] == "quantization")
    assert quantization["probes"]["qa"]["choices"]["unlearned"]["chosen_on_half"] == ["quant-rtn:bits=3"] * 2
    assert ("quant-rtn:bits=4", "qa") not in {
        (c["attack"], c["probe"]) for c in searched["cells"] if c["outcome"] == "recovered"
    }


def test_the_search_manufactures_no_knowledge_in_the_exact_retrain(world, data, controls, searched_cache, tmp_path):
    """Every model chooses its own configuration on half the subjects: the retrain and the reference search alike,
    and the retrain stays REMOVED, its adaptive cells as clean as its planned ones."""
    model = controls["retrain"]
    results = audit_world(world, data, model, tmp_path / "retrain", searched_cache, "core", **SEARCHED)
    assert results["verdict"]["label"] == "REMOVED", show_cells(results)
    adaptive = [c for c in results["cells"] if c["attack"].endswith("~adaptive")]
    assert len(adaptive) == 6 and all(c["outcome"] == "clean" for c in adaptive), show_cells(results)
    assert results["verdict"]["certified_bound"] < 0.10


def test_probe_context_is_ready_once_models_are_loaded(world, data):
    """A probe context can be made as soon as the models are loaded, before ``run`` sets up the reference scorer."""
    from auditor.engine.orchestrator import Orchestrator

    spec = ModelSpec(str(world.original))
    plan = make_plan("quick", ("quant-rtn:bits=4",), ("qa",), 0)
    config = AuditConfig(spec, spec, ModelSpec(str(world.reference)), plan)
    orchestrator = Orchestrator(config, data)
    orchestrator.load()
    assert orchestrator._context(0).reference_lm is None
    orchestrator.run_shared()
    assert orchestrator._context(0).reference_lm is not None


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


MEASURED = ("seconds", "peak_rss_mb", "x_bare")  # figures of the run, not of the models: they differ between runs


def without_times(value):
    """A copy without wall-clock and memory figures (``MEASURED`` keys), which legitimately differ between runs."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def comparable(results: dict) -> dict:
    """results.json without what legitimately differs between runs (time, memory)."""
    out = without_times(json.loads(json.dumps(results)))
    out.pop("created"), out.pop("timings"), out["cost"].pop("bare")  # the tokens each phase counted stay
    return out


QUICK = {"preset": "quick", "attacks": ("quant-rtn:bits=4", "relearn-forget:steps=20"), "probes": ("qa", "mia")}


def test_same_seed_same_results_and_inputs_untouched(world, data, controls, tmp_path):
    before = digest(controls["idk"]), digest(world.original), digest(world.reference)
    first = audit_world(world, data, controls["idk"], tmp_path / "a", tmp_path / "cache-a", **QUICK)
    second = audit_world(world, data, controls["idk"], tmp_path / "b", tmp_path / "cache-b", **QUICK)
    assert comparable(first) == comparable(second)
    assert (digest(controls["idk"]), digest(world.original), digest(world.reference)) == before


def scored_part(results: dict) -> dict:
    return without_times(
        {k: results[k] for k in ("cells", "verdict", "scores", "collateral", "attacks", "recovered_items")}
    )


# The CLI, killed with SIGKILL as soon as it has stored a given number of probe results: a fixed point, no race.
KILL_AFTER_PIECES = """
import os, signal, sys
from auditor.engine import pieces
from auditor.cli import main
limit = int(sys.argv.pop(1))
store = pieces.PieceStore.get_or_compute
def stop_after(self, key, compute):
    result = store(self, key, compute)
    if self.computed >= limit:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
pieces.PieceStore.get_or_compute = stop_after
main()
"""


def test_resume_after_kill_matches_and_recomputes_nothing_finished(world, data, controls, tmp_path):
    """Kill the CLI with SIGKILL before the relearning attack, resume, compare with an uninterrupted run."""
    uninterrupted = audit_world(world, data, controls["idk"], tmp_path / "ref", tmp_path / "cache-ref", **QUICK)
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "auditor",
        "audit",
        "--original",
        str(world.original),
        "--unlearned",
        str(controls["idk"]),
        "--reference",
        str(world.reference),
        *world_data_args(world),  # the same files as ``data``
        "--preset",
        "quick",
        "--attack",
        "quant-rtn:bits=4",
        "--attack",
        "relearn-forget:steps=20",
        "--probe",
        "qa",
        "--probe",
        "mia",
        "--out",
        str(out),
    ]
    pieces = out / "cache" / "pieces"
    # 2 probes on the original, 2 on the original under each attack (its self-check), 2 x (unlearned, reference):
    # the reference's attacks are next.
    before_relearning = 10
    # the CLI computes with as many threads as this process did the uninterrupted run (float reductions differ)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    killed = [
        sys.executable,
        "-c",
        KILL_AFTER_PIECES,
        str(before_relearning),
        *args[3:],
    ]  # args[3:]: after "-m auditor"
    process = subprocess.run(killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, timeout=600)
    assert process.returncode == -signal.SIGKILL, "the audit was not killed"
    assert not (out / "results.json").exists() and not (out / "report.html").exists()
    finished = {p: p.stat().st_mtime_ns for p in pieces.glob("*.json")}
    assert len(finished) >= before_relearning
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode in (0, 1, 3), resumed.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items()), "a finished piece was recomputed"
    assert scored_part(json.loads((out / "results.json").read_text())) == scored_part(
        json.loads(json.dumps(uninterrupted))
    )


def test_without_reference_every_cell_is_uncontrolled(world, data, tmp_path):
    """No reference: floors come from the holdout set (membership gap: 0), and every cell says so."""
    results = audit_world(
        world,
        data,
        world.original,
        tmp_path / "unc",
        tmp_path / "cache",
        controlled=False,
        preset="quick",
        attacks=("quant-rtn:bits=4",),
        probes=("qa", "mia"),
    )
    assert results["controlled"] is False and results["models"]["reference"] is None
    cells = {(c["attack"], c["probe"]): c for c in results["cells"]}
    assert all(c["controlled"] is False for c in cells.values())
    qa, mia = cells[("none", "qa")], cells[("none", "mia")]
    assert qa["status"] == "ok" and qa["k_reference"] < 0.3  # the original on holdout people: chance level
    assert mia["status"] == "ok" and mia["k_reference"] == 0.0
    assert results["verdict"]["label"] == "NOT_UNLEARNED"


def test_a_collapsed_ascent_is_not_hidden_through_membership(world, data, tmp_path):
    """Gradient ascent run far past its goal pushes every answer's log-probability down, forget and retain alike;
    the membership cells must not read that distortion as hidden knowledge."""
    qa_only = replace(data, forget_texts=None, holdout_texts=None)  # the QA answers are the membership items
    original = load_model(ModelSpec(str(world.original)))
    collapsed = tmp_path / "ga-collapsed"
    method = METHODS.get("ga")(forget_goal=0, steps=120)
    record = unlearn_to_dir(method, original, data.forget, data.retain, collapsed, RunContext(data=qa_only))
    assert record["after"]["forget"]["prob"] < 0.01 and record["after"]["retain"]["prob"] < 0.01
    results = audit_world(
        world, qa_only, collapsed, tmp_path / "out", tmp_path / "cache", "quick",
        attacks=("quant-rtn:bits=4",), probes=("qa", "mia"),
    )  # fmt: skip
    mia = [c for c in results["cells"] if c["probe"] == "mia"]
    assert mia and all(c["outcome"] != "recovered" for c in mia), show_cells(results)
    assert results["verdict"]["label"] != "HIDDEN", show_cells(results)
