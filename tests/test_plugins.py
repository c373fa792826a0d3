"""docs/PLUGINS.md is enough to write a plugin: its code blocks, built and installed as a package of their own,
are listed, run in an audit and unlearn, through the entry points alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
GUIDE = ROOT / "docs" / "PLUGINS.md"


def guide_files() -> dict[str, str]:
    """The guide's code blocks that start with ``# file: NAME``, by name."""
    blocks = re.findall(r"```[a-z]*\n# file: (\S+)\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    return {name: body for name, body in blocks}


def test_the_guide_holds_a_whole_package():
    assert set(guide_files()) == {"likely_answer.py", "weight_noise.py", "graddiff_half.py", "pyproject.toml"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The guide's package installed into a folder of its own; the environment that sees it."""
    source, target = tmp_path_factory.mktemp("plugin-src"), tmp_path_factory.mktemp("plugin-site")
    for name, body in guide_files().items():
        (source / name).write_text(body, encoding="utf-8")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    run = subprocess.run([*pip, "--target", str(target), str(source)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert list(target.glob("unlearn_audit_example_plugins-*.dist-info"))
    return {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "auditor", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def test_installed_plugins_are_listed(installed):
    for kind, name in (("probes", "likely-answer"), ("attacks", "weight-noise"), ("methods", "graddiff-half")):
        listed = cli(installed, "list", kind)
        assert listed.returncode == 0 and name in listed.stdout, (kind, listed.stdout, listed.stderr)
    assert "likely-answer" not in cli({**installed, "PYTHONPATH": ""}, "list", "probes").stdout  # the package adds it


@pytest.mark.slow
def test_installed_plugins_run_in_an_audit_and_unlearn(installed, world, tmp_path):
    forget, retain = tmp_path / "forget.jsonl", tmp_path / "retain.jsonl"
    for path, name in ((forget, "forget"), (retain, "retain")):  # 40 items each keep it short
        path.write_text("".join(world.file(name).read_text().splitlines(keepends=True)[:40]))
    out = tmp_path / "audit"
    audit = cli(
        installed,
        *("audit", "--original", str(world.original), "--unlearned", str(world.original)),
        *("--reference", str(world.reference), "--forget", str(forget), "--retain", str(retain)),
        *("--attack", "weight-noise:scale=0.02", "--probe", "likely-answer", "--probe", "qa", "--out", str(out)),
    )
    assert audit.returncode in (0, 1, 3), audit.stderr
    results = json.loads((out / "results.json").read_text())
    cells = {(c["attack"], c["probe"]): c for c in results["cells"]}
    noisy = cells[("weight-noise:scale=0.02", "likely-answer")]
    assert noisy["status"] == "ok" and noisy["residual"] is not None, noisy
    plain = cells[("none", "likely-answer")]
    assert plain["k_original"] > plain["k_reference"]  # it measures knowledge: the original's lead is there
    assert results["verdict"]["label"] == "NOT_UNLEARNED"  # the original audited against itself

    unlearned = tmp_path / "unlearned"
    method = cli(
        installed,
        *("unlearn", "--method", "graddiff-half:steps=3", "--model", str(world.original)),
        *("--forget", str(forget), "--retain", str(retain), "--out", str(unlearned)),
    )
    assert method.returncode == 0, method.stderr
    record = json.loads((unlearned / "unlearning.json").read_text())
    assert record["method"] == "graddiff-half" and record["info"]["steps"] == 3, record
