"""Progress without a terminal: one timestamped line per phase on stderr, the seconds of each in results.json."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from auditor.engine.progress import PhaseRecorder
from auditor.errors import UserError
from auditor.lm import memory

STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ")
PHASE_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] (?P<phase>.+): (?P<seconds>\d+\.\d) s(?P<reused> \(reused\))?$")


def test_recorder_logs_stamped_lines_and_keeps_seconds():
    ticks = iter([0.0, 1.0, 1.5, 4.0, 10.0, 10.3])
    lines: list[str] = []
    recorder = PhaseRecorder(lines.append, clock=lambda: next(ticks))
    with recorder.phase("probe qa on unlearned@quant"), recorder.phase("attack quant on unlearned", announce=True) as a:
        a.reused = True  # the attack runs inside the probe that first needs the attacked model
    with recorder.phase("load original"):
        pass
    assert all(STAMP.match(line) for line in lines), lines
    assert [STAMP.sub("", line) for line in lines] == [
        "attack quant on unlearned ...",
        "attack quant on unlearned: 0.5 s (reused)",
        "probe qa on unlearned@quant: 3.5 s",  # 4 s less the 0.5 s of the attack run inside it
        "load original: 0.3 s",
    ]
    kept = ("phase", "seconds", "reused")  # memory, tokens and their ratio: tests of their own
    assert [{k: v for k, v in p.items() if k in kept} for p in recorder.to_json()] == [
        {"phase": "attack quant on unlearned", "seconds": 0.5, "reused": True},
        {"phase": "probe qa on unlearned@quant", "seconds": 3.5, "reused": False},
        {"phase": "load original", "seconds": 0.3, "reused": False},
    ]
    assert sum(p["seconds"] for p in recorder.to_json()) == pytest.approx(4.3)  # wall time, nothing counted twice


@pytest.mark.skipif(not memory.reset_window(), reason="the system cannot reset the peak resident memory")
def test_each_phase_records_its_own_peak_memory_nested_ones_included():
    size = 200 * 2**20
    recorder = PhaseRecorder()
    with recorder.phase("probe qa on unlearned@quant"):
        with recorder.phase("attack quant on unlearned"):
            block = np.ones(size // 8)  # touched: resident
            del block
        with recorder.phase("load original"):
            pass
    peaks = {p.phase: p.peak_rss_mb for p in recorder.phases}
    assert peaks["attack quant on unlearned"] >= peaks["load original"] + 150  # the block came and went before
    assert peaks["probe qa on unlearned@quant"] >= peaks["attack quant on unlearned"]  # its span holds the attack's
    assert (
        memory.peak_rss() / 2**20 >= peaks["attack quant on unlearned"] - 0.1
    )  # the process's peak survives the resets


def test_held_lines_come_at_the_end_and_not_at_all_on_error():
    lines: list[str] = []
    recorder = PhaseRecorder(lines.append)
    with recorder.held():
        with recorder.phase("load original"):
            pass
        assert lines == []
    assert len(lines) == 1 and lines[0].endswith("load original: 0.0 s")
    lines.clear()
    with pytest.raises(UserError), recorder.held():
        with recorder.phase("load unlearned"):
            pass
        raise UserError("tokenizers differ")
    with pytest.raises(UserError), recorder.phase("load reference"):
        raise UserError("no such model")
    assert lines == [] and [p.phase for p in recorder.phases] == ["load original", "load unlearned"]


@pytest.mark.slow
def test_audit_without_a_terminal_prints_phase_lines_and_records_their_seconds(world, tmp_path):
    from reports.schema import validate_results

    files = {}
    for name in ("forget", "retain"):  # 40 items each keep the audit short
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(world.file(name).read_text().splitlines(keepends=True)[:40]))
    out = tmp_path / "out"
    options = {
        "--original": world.original,
        "--unlearned": world.retrain(1),
        "--reference": world.reference,
        "--forget": files["forget"],
        "--retain": files["retain"],
        "--preset": "quick",
        "--attack": "quant-rtn:bits=4",
        "--probe": "qa",
        "--out": out,
    }
    args = [sys.executable, "-m", "auditor", "audit", *(str(x) for pair in options.items() for x in pair)]
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"HF_HUB_OFFLINE": "1"}
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)  # stderr is a pipe, not a TTY
    assert run.returncode in (0, 1, 3), run.stderr
    printed = [m.group("phase") for m in map(PHASE_LINE.match, run.stderr.splitlines()) if m]
    assert printed == [
        "load original",
        "load unlearned",
        "load reference",
        "bare throughput of the original",  # the cost ledger's yardstick
        "probe qa on original (retain sample)",
        "probe qa on original",
        "attack quant-rtn:bits=4 on original",  # the self-check, before the other models' weights are read
        "probe qa on original@quant-rtn:bits=4",  # then the original is dropped
        "probe qa on unlearned (retain sample)",
        "probe qa on unlearned",
        "probe qa on reference",
        "attack quant-rtn:bits=4 on reference",
        "probe qa on reference@quant-rtn:bits=4",
        "attack quant-rtn:bits=4 on unlearned",
        "probe qa on unlearned@quant-rtn:bits=4",
    ], run.stderr
    lines = run.stderr.splitlines()
    power = [i for i, line in enumerate(lines) if line.startswith("power: qa: a zero residual would reach")]
    reference_attacked = next(i for i, line in enumerate(lines) if "attack quant-rtn:bits=4 on reference" in line)
    assert power and power[0] < reference_attacked and "(40 items, 10 subjects)" in lines[power[0]], run.stderr
    assert "certified bound: " in run.stdout, run.stdout
    results = json.loads((out / "results.json").read_text())
    validate_results(results)
    assert [p["phase"] for p in results["phases"]] == printed
    assert all(p["seconds"] >= 0 and p["reused"] is False for p in results["phases"])
    assert sum(p["seconds"] for p in results["phases"]) <= results["timings"]["total_seconds"] + 0.1

    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == run.returncode, resumed.stderr
    printed = [m.group("phase") for m in map(PHASE_LINE.match, resumed.stderr.splitlines()) if m]
    loads = ["load original", "load unlearned", "load reference", "bare throughput of the original"]
    assert printed == loads, resumed.stderr  # every piece reused
    assert "pieces computed 0, reused 8" in resumed.stderr  # 2 collateral, 3 plain, 3 attacked (the self-check too)

    shutil.rmtree(out / "cache" / "pieces")  # the probes run again; quantized copies are rebuilt, never stored
    assert not [f for f in (out / "cache").rglob("*.safetensors")]
    rerun = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == run.returncode, rerun.stderr
    again = [m for m in map(PHASE_LINE.match, rerun.stderr.splitlines()) if m]
    first = [p["phase"] for p in results["phases"]]  # the first run's phases: every one runs again
    assert [m.group("phase") for m in again] == first and not any(m.group("reused") for m in again), rerun.stderr
    rebuilt = json.loads((out / "results.json").read_text())
    assert [c["residual"] for c in rebuilt["cells"]] == [c["residual"] for c in results["cells"]]
