"""The audit end to end on the embedded world: known-answer calibration, resume, determinism, bad input."""

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

from auditor.engine.audit import run_audit
from auditor.engine.demo import DEMO_METHODS, WORLD_AUDIT_FILES, run_demo
from auditor.engine.orchestrator import AuditConfig
from auditor.engine.plan import DEMO_PRESET, make_plan
from auditor.engine.unlearn_runner import unlearn_to_dir
from auditor.lm.models import load_model
from auditor.plugins import RunContext
from auditor.registry import METHODS
from auditor.stats.policy import Policy
from auditor.types import ModelSpec

pytestmark = pytest.mark.slow  # every test here audits models of the embedded world

CALIBRATION_PRESET = DEMO_PRESET  # the known-answer controls are audited as `make demo` audits them
CONTROLS = ("noop", "idk", "quant-hide", "quant-hide-3bit", "retrain")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """Pieces of the original, the reference and the attacked reference are shared by the audits."""
    return tmp_path_factory.mktemp("audit-cache")


def audit(world, data, unlearned: Path, out: Path, cache: Path, preset: str = CALIBRATION_PRESET, **kw):
    config = AuditConfig(
        ModelSpec(str(world.original)),
        ModelSpec(str(unlearned)),
        ModelSpec(str(world.reference)) if kw.pop("controlled", True) else None,
        make_plan(preset, kw.pop("attacks", ()), kw.pop("probes", ()), 0, budget=kw.pop("budget", None)),
        cache_dir=cache,
    )
    return run_audit(config, data, Policy(), out, command="test", options={"preset": preset}, resume=True).results


@pytest.fixture(scope="session")
def demo_run(world, tmp_path_factory):
    """The default demo (controls and one method per family, its preset), as ``make demo`` runs it."""
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, CALIBRATION_PRESET, DEMO_METHODS, None, jobs=2, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def calibration(demo_run):
    """Each demo method's results.json."""
    return {name: json.loads((demo_run / name / "results.json").read_text()) for name in DEMO_METHODS}


def world_data_args(world) -> list[str]:
    """The CLI options that read the same files as the ``data`` fixture."""
    return [
        arg for opt, name in WORLD_AUDIT_FILES.items() for arg in (f"--{opt.replace('_', '-')}", str(world.file(name)))
    ]


def cells_of(results, outcome):
    return {(c["attack"], c["probe"]) for c in results["cells"] if c["outcome"] == outcome}


def show(results) -> str:
    rows = [
        f"{c['attack']:24s} {c['probe']:20s} {c['residual']} [{c['ci_low']}, {c['ci_high']}] {c['note'] or ''}"
        for c in results["cells"]
    ]
    return results["verdict"]["label"] + "\n" + "\n".join(rows)


def test_noop_is_not_unlearned(calibration):
    results = calibration["noop"]
    assert results["verdict"]["label"] == "NOT_UNLEARNED", show(results)
    direct = next(c for c in results["cells"] if c["attack"] == "none" and c["probe"] == "qa")
    assert direct["ci_low"] > 0.5, show(results)


def test_retrain_is_removed(calibration):
    results = calibration["retrain"]
    assert results["verdict"]["label"] == "REMOVED", show(results)
    informative = [c for c in results["cells"] if c["residual"] is not None]
    assert informative and all(c["ci_high"] < 0.10 for c in informative), show(results)


def test_idk_is_hidden_by_relearning_or_in_context(calibration):
    results = calibration["idk"]
    assert results["verdict"]["label"] == "HIDDEN", show(results)
    deciding = {tuple(c) for c in results["verdict"]["deciding_cells"]}
    assert any(a.startswith("relearn") or p.startswith("in-context") for a, p in deciding), show(results)
    for attack, probe in deciding:
        cell = next(c for c in results["cells"] if (c["attack"], c["probe"]) == (attack, probe))
        assert cell["ci_low"] > 0.25, show(results)


def test_quant_hide_is_hidden_by_quantization(calibration):
    results = calibration["quant-hide"]
    assert results["verdict"]["label"] == "HIDDEN", show(results)
    assert ("quant-rtn:bits=4", "qa") in {tuple(c) for c in results["verdict"]["deciding_cells"]}, show(results)
    direct = next(c for c in results["cells"] if c["attack"] == "none" and c["probe"] == "qa")
    assert direct["ci_high"] < 0.5, show(results)


# Core's families searched within 4x their cost, with a probe of each kind: what the adaptive tests audit.
SEARCHED = {"attacks": ("quant-rtn:bits=4", "relearn-forget"), "probes": ("qa", "paraphrase", "mia"), "budget": 4.0}


def test_a_hiding_only_a_search_finds_is_hidden_to_the_adaptive_audit_alone(
    world, data, calibration, demo_run, shared_cache, tmp_path
):
    """quant-hide-3bit stays inside the original's 3-bit bins: the planned 4-bit RTN and relearning do not bring it
    back (core: not HIDDEN); the quantization search's 3-bit configuration does, cross-fitted."""
    fixed = calibration["quant-hide-3bit"]
    assert fixed["verdict"]["label"] in ("REMOVED", "INCONCLUSIVE"), show(fixed)
    model = demo_run / "models" / "quant-hide-3bit"
    searched = audit(world, data, model, tmp_path / "searched", shared_cache, "core", **SEARCHED)
    assert searched["verdict"]["label"] == "HIDDEN", show(searched)
    deciding = {tuple(c) for c in searched["verdict"]["deciding_cells"]}
    assert deciding and {attack for attack, _ in deciding} == {"quant-rtn:bits=4~adaptive"}, show(searched)
    quantization = next(s for s in searched["searches"] if s["family"] == "quantization")
    assert quantization["probes"]["qa"]["choices"]["unlearned"]["chosen_on_half"] == ["quant-rtn:bits=3"] * 2
    assert ("quant-rtn:bits=4", "qa") not in {
        (c["attack"], c["probe"]) for c in searched["cells"] if c["outcome"] == "recovered"
    }


def test_the_search_manufactures_no_knowledge_in_the_exact_retrain(world, data, demo_run, shared_cache, tmp_path):
    """Every model chooses its own configuration on half the subjects: the retrain and the reference search alike,
    and the retrain stays REMOVED, its adaptive cells as clean as its planned ones."""
    model = demo_run / "models" / "retrain"
    results = audit(world, data, model, tmp_path / "retrain", shared_cache, "core", **SEARCHED)
    assert results["verdict"]["label"] == "REMOVED", show(results)
    adaptive = [c for c in results["cells"] if c["attack"].endswith("~adaptive")]
    assert len(adaptive) == 6 and all(c["outcome"] == "clean" for c in adaptive), show(results)
    assert results["verdict"]["certified_bound"] < 0.10


def test_retrain_certified_bound_uses_subjects(calibration):
    results = calibration["retrain"]
    verdict, statistics = results["verdict"], results["statistics"]
    informative = [c for c in results["cells"] if c["outcome"] not in ("skipped", "uninformative")]
    assert statistics["resampling"] == "subjects" and {c["n_subjects"] for c in informative} >= {120}
    assert verdict["certified_bound"] == max(c["ci_high"] for c in informative) < 0.10, show(results)


def subjects_subset(data, n_subjects: int):
    """The audit data with only the first ``n_subjects`` forget subjects (their QA items, multi-hop and texts)."""
    from auditor.data import fingerprint_items
    from auditor.types import ItemSet

    keep = list(dict.fromkeys(item.group for item in data.forget.items))[:n_subjects]

    def only(items):
        picked = tuple(item for item in items.items if item.group in keep)
        return ItemSet(f"{items.name}-{n_subjects}", items.kind, picked, items.source, fingerprint_items(picked))

    return replace(data, forget=only(data.forget), multihop=only(data.multihop), forget_texts=only(data.forget_texts))


def test_a_small_forget_set_says_how_far_it_can_see(world, data, demo_run, tmp_path):
    """20 subjects instead of 120: the exact retrain cannot be certified REMOVED; the audit says how far it sees
    (a certified bound above the threshold, far below the hidden one), and the hiding controls stay HIDDEN."""
    small = subjects_subset(data, 20)
    plan = {"attacks": ("quant-rtn:bits=4", "relearn-forget"), "probes": ("qa", "paraphrase", "multihop")}
    runs = {
        name: audit(world, small, demo_run / "models" / name, tmp_path / name, tmp_path / "cache", **plan)
        for name in ("retrain", "idk", "quant-hide")
    }
    retrain = runs["retrain"]
    assert retrain["verdict"]["label"] == "INCONCLUSIVE", show(retrain)
    assert 0.10 < retrain["verdict"]["certified_bound"] < 0.25, show(retrain)
    assert retrain["verdict"]["limiting_cells"], show(retrain)
    assert all(c["n_subjects"] == 20 for c in retrain["cells"] if c["residual"] is not None)
    assert runs["idk"]["verdict"]["label"] == "HIDDEN", show(runs["idk"])
    assert runs["quant-hide"]["verdict"]["label"] == "HIDDEN", show(runs["quant-hide"])


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


def test_results_validate_against_schema(calibration):
    from reports.schema import SCHEMA_VERSION, validate_results

    for results in calibration.values():
        validate_results(results)  # raises on any violation
        assert results["schema_version"] == SCHEMA_VERSION and results["cells"]


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


MEASURED = ("seconds", "peak_rss_mb")  # figures of the run, not of the models: they differ between runs


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
    out.pop("created"), out.pop("timings")
    return out


QUICK = {"preset": "quick", "attacks": ("quant-rtn:bits=4", "relearn-forget:steps=20"), "probes": ("qa", "mia")}


def test_same_seed_same_results_and_inputs_untouched(world, data, controls, tmp_path):
    before = digest(controls["idk"]), digest(world.original), digest(world.reference)
    first = audit(world, data, controls["idk"], tmp_path / "a", tmp_path / "cache-a", **QUICK)
    second = audit(world, data, controls["idk"], tmp_path / "b", tmp_path / "cache-b", **QUICK)
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
    uninterrupted = audit(world, data, controls["idk"], tmp_path / "ref", tmp_path / "cache-ref", **QUICK)
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
    # 2 probes x (original, unlearned, reference) + 2 probes x 2 roles for quant-rtn: the relearning attack is next.
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
    results = audit(
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


def readme_leaderboard() -> dict[str, str]:
    """Method -> verdict, from the README's demo leaderboard table."""
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    table = text[text.index("| method | verdict |") :].split("\n\n")[0].splitlines()[2:]
    return {cols[1].strip(): cols[2].strip() for cols in (line.split("|") for line in table)}


def test_demo_writes_the_leaderboard_of_the_readme(demo_run):
    summary, per_attack = (demo_run / "leaderboard.md").read_text().strip().split("\n\n")
    verdicts = {cols[1].strip(): cols[2].strip() for cols in (line.split("|") for line in summary.splitlines()[2:])}
    assert list(verdicts) == list(DEMO_METHODS)
    assert verdicts == readme_leaderboard(), "README's leaderboard differs from `make demo`'s"
    header, _, *rows = per_attack.splitlines()  # r(attack, qa) per method, for no attack and each of the plan's
    assert header.startswith("| method | r(none, qa) | r(quant-rtn:bits=4, qa) |")
    assert [row.split("|")[1].strip() for row in rows] == list(DEMO_METHODS)
    html = (demo_run / "index.html").read_text()
    for name in verdicts:
        assert f'href="{name}/report.html"' in html and (demo_run / name / "report.html").is_file()


# Share of the original's retain accuracy each method keeps at least. GradDiff has no retain target: its ascent
# wears the retain answers down on the way to the forget goal, by an amount that differs between CPUs (retain
# 0.887 on an AMD EPYC, 0.785 on an Intel Xeon), so its bound only catches a collapse (plain ga ends near 0.07).
RETAIN_KEPT = {"ga-gd": 0.65, "npo-gd": 0.8, "ext-sub": 0.8}


@pytest.mark.parametrize("name", sorted(RETAIN_KEPT))
def test_methods_meet_their_goal_and_keep_retain(demo_run, name):
    """Each method's own goal (forget accuracy at most 25% of the original's) lies well inside these bounds."""
    record = json.loads((demo_run / "models" / name / "unlearning.json").read_text())
    before, after = record["before"], record["after"]
    assert after["forget"]["accuracy"] <= 0.5 * before["forget"]["accuracy"], record["info"]["stop_reason"]
    kept = RETAIN_KEPT[name] * before["retain"]["accuracy"]
    assert after["retain"]["accuracy"] >= kept, record["info"]["stop_reason"]


def test_a_collapsed_ascent_is_not_hidden_through_membership(world, data, tmp_path):
    """Gradient ascent run far past its goal pushes every answer's log-probability down, forget and retain alike;
    the membership cells must not read that distortion as hidden knowledge."""
    qa_only = replace(data, forget_texts=None, holdout_texts=None)  # the QA answers are the membership items
    original = load_model(ModelSpec(str(world.original)))
    collapsed = tmp_path / "ga-collapsed"
    method = METHODS.get("ga")(forget_goal=0, steps=120)
    record = unlearn_to_dir(method, original, data.forget, data.retain, collapsed, RunContext(data=qa_only))
    assert record["after"]["forget"]["prob"] < 0.01 and record["after"]["retain"]["prob"] < 0.01
    results = audit(
        world, qa_only, collapsed, tmp_path / "out", tmp_path / "cache", "quick",
        attacks=("quant-rtn:bits=4",), probes=("qa", "mia"),
    )  # fmt: skip
    mia = [c for c in results["cells"] if c["probe"] == "mia"]
    assert mia and all(c["outcome"] != "recovered" for c in mia), show(results)
    assert results["verdict"]["label"] != "HIDDEN", show(results)


def test_recovered_items_show_answers_and_membership_statistics(calibration):
    from auditor.stats.metrics import contains_answer

    results = calibration["idk"]
    outcomes = {(c["attack"], c["probe"]): c["outcome"] for c in results["cells"]}
    items = results["recovered_items"]
    assert items and all(outcomes[(i["attack"], i["probe"])] == i["cell_outcome"] for i in items)
    shown = {(i["attack"], i["probe"]) for i in items}  # 7 recovering cells share the 40 items: no 5 cells take all
    assert len(shown) > 5 and ("relearn-forget", "mia") in shown and len(items) <= 40
    qa = [i for i in items if i["probe"] == "qa"]
    assert qa and all(contains_answer(i["outputs"]["attacked"], i["expected"]) for i in qa)
    mia = [i for i in items if i["probe"] == "mia"]  # the statistic of each model, not an output
    assert mia and all(float(i["outputs"]["attacked"]) > float(i["outputs"]["unlearned"]) for i in mia)
    assert calibration["retrain"]["recovered_items"] == []
