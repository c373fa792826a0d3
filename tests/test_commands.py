"""The command line as a user writes it: options from a config file and the environment, one spelling of each
thing (the old ones still working with a line), the report and compare commands, --keep-attacked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "auditor", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def small_sets(world, folder, n: int = 60) -> dict[str, str]:
    """The first ``n`` items of the world's forget, retain and holdout files: the options, not the figures, are
    at stake."""
    files = {}
    for name in ("forget", "retain", "holdout"):
        lines = world.file(name).read_text(encoding="utf-8").splitlines()[:n]
        files[name] = str(folder / f"{name}.jsonl")
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


@pytest.fixture(scope="module")
def configured(world, tmp_path_factory):
    """An audit of the original against itself whose options come from a --config file (models, data, preset)
    and from UNLEARN_AUDIT_* variables (attack, probe, out, --keep-attacked)."""
    folder = tmp_path_factory.mktemp("configured")
    sets = small_sets(world, folder)
    config = {"original": str(world.original), "unlearned": str(world.original), "preset": "quick", **sets}
    (folder / "audit.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {
        "UNLEARN_AUDIT_ATTACK": "quant-rtn:bits=4",
        "UNLEARN_AUDIT_PROBE": "qa",
        "UNLEARN_AUDIT_OUT": str(folder / "out"),
        "UNLEARN_AUDIT_KEEP_ATTACKED": str(folder / "attacked"),
    }
    result = run("audit", "--config", str(folder / "audit.yaml"), env=env)
    return folder, result


def test_audit_takes_its_options_from_a_config_file_and_the_environment(configured):
    folder, result = configured
    assert result.returncode in (0, 1, 3), result.stderr
    results = json.loads((folder / "out" / "results.json").read_text())
    options = results["config"]
    assert options["preset"] == "quick" and options["attacks"] == ["quant-rtn:bits=4"] and options["probes"] == ["qa"]
    assert {c["probe"] for c in results["cells"]} == {"qa"}
    assert {c["attack"] for c in results["cells"]} == {"none", "quant-rtn:bits=4"}
    assert results["verdict"]["label"] == "NOT_UNLEARNED"  # the original audited against itself


def test_keep_attacked_saves_the_attacked_models_that_ran(configured):
    """The unlearned model is the original here: its pieces are the original's, so the attack ran once."""
    folder, _ = configured
    saved = sorted(p.parent.relative_to(folder / "attacked") for p in (folder / "attacked").rglob("config.json"))
    assert [str(p) for p in saved] == ["original/quant-rtn:bits=4/main"]


def test_report_renders_each_format_and_needs_one(configured, tmp_path):
    folder, _ = configured
    results = str(folder / "out" / "results.json")
    written = run("report", results, "--html", str(tmp_path / "r.html"), "--junit", str(tmp_path / "r.xml"),
                  "--markdown", str(tmp_path / "r.md"))  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert "<html" in (tmp_path / "r.html").read_text() and "<testsuite" in (tmp_path / "r.xml").read_text()
    assert "NOT_UNLEARNED" in (tmp_path / "r.md").read_text()
    nothing = run("report", results)
    assert nothing.returncode == 2 and nothing.stderr.strip().count("\n") == 0 and "--html" in nothing.stderr


def test_compare_passes_on_itself_and_fails_when_a_cell_rose(configured, tmp_path):
    folder, _ = configured
    results = folder / "out" / "results.json"
    same = run("compare", str(results), str(results))
    assert same.returncode == 0 and "0 rose" in same.stdout, same.stderr
    lowered = json.loads(results.read_text())
    for cell in lowered["cells"]:
        if cell["residual"] is not None:
            cell["residual"] = cell["ci_low"] = cell["ci_high"] = 0.0
    (tmp_path / "old.json").write_text(json.dumps(lowered))
    rose = run("compare", str(tmp_path / "old.json"), str(results))
    assert rose.returncode == 1 and "0 rose" not in rose.stdout


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "cannot read baseline"), ("{not json", "not json"), ('{"cells": 3}', "not an unlearn-audit results")],
)
def test_a_bad_baseline_is_one_line_before_any_work(configured, tmp_path, content, says):
    folder, _ = configured
    baseline = tmp_path / "old.json"
    if content is not None:
        baseline.write_text(content)
    result = run("audit", "--config", str(folder / "audit.yaml"), "--baseline", str(baseline),
                 "--attack", "quant-rtn:bits=4", "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and says in result.stderr.lower(), result.stderr
    assert not (tmp_path / "out").exists()


def test_old_spellings_still_work_with_a_deprecation_line(world, tmp_path):
    sets = small_sets(world, tmp_path, n=12)
    model = ("--model", str(world.original), "--json")
    new = run("probe", "qa:max_new_tokens=8", *model, env={"UNLEARN_AUDIT_PROBE_FORGET": sets["forget"]})
    old = run("probe", "qa", "--param", "max_new_tokens=8", "--items", sets["forget"], *model)
    assert new.returncode == 0 and old.returncode == 0, new.stderr + old.stderr
    assert json.loads(new.stdout) == json.loads(old.stdout)  # the forget set from the environment in the first
    assert "--param" in old.stderr and "--items" in old.stderr and old.stderr.count("deprecated") == 2
    assert "deprecated" not in new.stderr
    both = run("probe", "qa", "--forget", sets["forget"], "--items", sets["forget"], *model)
    assert both.returncode == 2 and "--forget only" in both.stderr
