"""Campaigns: many models against one original, one leaderboard, and a checkpoint campaign's trajectories; and
``--engine ray`` on a local Ray instance with two workers: the local engine's results.json cells, bit for bit, for
one audit and for a campaign, and the same again when a worker is killed in the middle of a piece."""

from __future__ import annotations

import json
import re
import threading
import time

import psutil
import pytest
import torch
from conftest import audit_world, show_cells, world_data_args
from test_cli import run_cli

from auditor.campaign.campaign import Campaign, run_campaign, worst_exit_code
from auditor.campaign.pieces_on_workers import run_audit_on_workers
from auditor.campaign.roster import CampaignModel, checked_models
from auditor.engine.plan import DEMO_PRESET, make_plan
from auditor.engine.records import AuditConfig
from auditor.errors import UserError
from auditor.stats.policy import Policy
from auditor.types import ModelSpec

# A plan cheap enough for a test that still tells the three controls apart.
ATTACKS, PROBES = ("quant-rtn:bits=4", "relearn-forget:steps=10"), ("qa", "mia")
PLAN = (*(a for attack in ATTACKS for a in ("--attack", attack)), *(a for probe in PROBES for a in ("--probe", probe)))
MODELS = {"step0": "noop", "step100": "idk", "step200": "retrain"}  # names with steps: a checkpoint campaign


@pytest.fixture(scope="module")
def campaign_run(world, controls, tmp_path_factory):
    """``unlearn-audit campaign`` over three controls named as the checkpoints of one run, with one thread (the
    demo's fixture runs a campaign in two local workers)."""
    out = tmp_path_factory.mktemp("campaign") / "out"
    models = [arg for name, control in MODELS.items() for arg in ("--unlearned", f"{name}={controls[control]}")]
    run = run_cli(
        "campaign", "--original", str(world.original), "--reference", str(world.reference), *models,
        *world_data_args(world), *PLAN, "--out", str(out), threads=1,
    )  # fmt: skip
    return out, run


def test_a_campaign_writes_the_index_the_leaderboards_and_a_report_per_model(campaign_run):
    out, run = campaign_run
    assert run.returncode == 1, run.stderr  # noop fails its gate: the campaign's gate is the worst
    for name in MODELS:
        assert (out / name / "report.html").is_file() and (out / name / "results.json").is_file()
    board = json.loads((out / "leaderboard.json").read_text())
    assert [row["name"] for row in board["models"]] == list(MODELS) and board["exit_code"] == 1
    assert board["checkpoints"] is True and [row["step"] for row in board["models"]] == [0, 100, 200]
    table = (out / "leaderboard.md").read_text()
    assert table.startswith("| model | verdict |") and all(f"| {name} |" in table for name in MODELS)
    html = (out / "index.html").read_text()
    assert all(f'href="{name}/report.html"' in html for name in MODELS)


def test_each_model_gets_the_verdict_and_cells_of_its_own_audit(campaign_run, world, data, controls, tmp_path):
    """The campaign shares pieces between its audits; each model audited alone (one after the other, pieces of
    the original and the reference reused as `audit --resume` would), with the campaign's one thread, reads the
    same, bit for bit."""
    out, _ = campaign_run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for name, control in MODELS.items():
        campaign = json.loads((out / name / "results.json").read_text())
        alone = audit_world(
            world, data, controls[control], tmp_path / name, tmp_path / "cache", attacks=ATTACKS, probes=PROBES
        )
        assert campaign["verdict"]["label"] == alone["verdict"]["label"], show_cells(campaign) + show_cells(alone)
        assert campaign["cells"] == alone["cells"]
    torch.set_num_threads(threads)
    assert {json.loads((out / n / "results.json").read_text())["verdict"]["label"] for n in MODELS} == {
        "NOT_UNLEARNED",
        "HIDDEN",
        "REMOVED",
    }


def test_a_checkpoint_campaign_draws_each_probes_trajectory_from_the_cells(campaign_run):
    out, _ = campaign_run
    html = (out / "index.html").read_text()
    assert "Trajectory over the checkpoints" in html
    for probe in ("qa", "mia"):
        svg = re.search(rf'<svg [^>]*data-probe="{probe}".*?</svg>', html, re.S)
        assert svg, f"no trajectory for {probe}"
        drawn = {
            (series, int(step)): float(value)
            for series, step, value in re.findall(
                r'data-series="(\w+)" data-step="(\d+)" data-value="([^"]+)"', svg.group(0)
            )
        }
        for name, step in (("step0", 0), ("step100", 100), ("step200", 200)):
            cells = json.loads((out / name / "results.json").read_text())["cells"]
            plain = next(c for c in cells if c["attack"] == "none" and c["probe"] == probe)
            attacked = [
                c["residual"]
                for c in cells
                if c["probe"] == probe and c["attack"] != "none" and c["residual"] is not None
                if c["outcome"] not in ("self-check failed", "skipped")
            ]
            assert drawn[("plain", step)] == pytest.approx(plain["residual"])
            assert drawn[("attacked", step)] == pytest.approx(max(attacked))


def test_model_names_are_folders_and_steps_come_from_them():
    spec = ModelSpec("m")
    models = checked_models([CampaignModel("step100", spec), CampaignModel("checkpoint-5", spec)])
    assert [m.step for m in models] == [100, 5]
    assert checked_models([CampaignModel("ga", spec)])[0].step is None
    for bad in ("../x", "cache", ".hidden"):
        with pytest.raises(UserError, match="model name"):
            checked_models([CampaignModel(bad, spec)])
    with pytest.raises(UserError, match="given twice"):
        checked_models([CampaignModel("a", spec), CampaignModel("a", spec)])


def test_the_worst_gate_is_the_campaigns_exit_code():
    def entry(code: int) -> dict:
        return {"results": {"verdict": {"exit_code": code}}}

    assert worst_exit_code([entry(0), entry(3)]) == 3
    assert worst_exit_code([entry(3), entry(1), entry(0)]) == 1
    assert worst_exit_code([entry(0)]) == 0


BAD = {
    "no model": [],
    "a name twice": ["--unlearned", "a={original}", "--unlearned", "a={original}"],
    "a missing model": ["--unlearned", "x={tmp}/missing"],
    "a manifest row without a path": ["--manifest", "{manifest}"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_campaign_input_exits_2_with_one_line(world, tmp_path, case):
    manifest = tmp_path / "models.yaml"
    manifest.write_text("models:\n  - name: a\n    step: 3\n")
    args = [a.format(original=world.original, tmp=tmp_path, manifest=manifest) for a in BAD[case]]
    run = run_cli(
        "campaign", "--original", str(world.original), *args, *world_data_args(world), "--out", str(tmp_path / "o")
    )
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("error: "), run.stderr
    assert not (tmp_path / "o" / "index.html").exists()


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance with two CPUs, shared by the tests here (the engine uses a running instance)."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (make install installs it)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_results(campaign_run):
    """The local campaign's audit of the idk control."""
    return json.loads((campaign_run[0] / "step100" / "results.json").read_text())


def config_for(world, data, unlearned, cache) -> AuditConfig:
    plan = make_plan(DEMO_PRESET, ATTACKS, PROBES, 0, data=data)
    return AuditConfig(
        ModelSpec(str(world.original)),
        ModelSpec(str(unlearned)),
        ModelSpec(str(world.reference)),
        plan,
        cache_dir=cache,
    )


def ray_audit(world, data, unlearned, out) -> dict:
    """The audit with its pieces in two Ray workers of one thread each (the driver has two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        config = config_for(world, data, unlearned, out / "cache")
        outputs = run_audit_on_workers(
            config, data, Policy(), out, engine="ray", jobs=2, command="test", options={}, log=lambda _: None
        )
    finally:
        torch.set_num_threads(threads)
    return outputs.results


class WorkerKiller(threading.Thread):
    """Kills the first Ray worker seen running a piece (``ray::_in_task``) once it has run ``after`` seconds."""

    def __init__(self, after: float = 1.5):
        super().__init__(daemon=True)
        self.after, self.killed, self.stop = after, None, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.killed is None:
            for process in psutil.Process().children(recursive=True):
                try:
                    running = process.cmdline()[:1] == ["ray::_in_task"] or process.name() == "ray::_in_task"
                except psutil.Error:
                    continue
                if running:
                    time.sleep(self.after)
                    process.kill()
                    self.killed = process.pid
                    return
            time.sleep(0.1)


def test_an_audit_on_ray_workers_has_the_local_cells_even_when_a_worker_is_killed(
    world, data, controls, local_results, ray_instance, tmp_path
):
    killer = WorkerKiller()
    killer.start()
    try:
        results = ray_audit(world, data, controls["idk"], tmp_path)
    finally:
        killer.stop.set()
    assert killer.killed is not None, "no Ray worker was seen running a piece"
    workers = {phase.get("worker") for phase in results["phases"]} - {None}
    assert len(workers) >= 2, "the pieces ran in worker processes"  # and the driver computed none of them:
    assert not [p for p in results["phases"] if p.get("worker") is None and p["phase"].startswith("probe")]
    assert not psutil.pid_exists(killer.killed) or psutil.Process(killer.killed).status() == psutil.STATUS_ZOMBIE
    assert results["cells"] == local_results["cells"], show_cells(results) + "\n" + show_cells(local_results)


def test_a_campaign_on_ray_workers_has_the_local_cells(world, data, controls, campaign_run, ray_instance, tmp_path):
    names = ("step0", "step100")
    models = tuple(CampaignModel(name, ModelSpec(str(controls[MODELS[name]]))) for name in names)
    plan = make_plan(DEMO_PRESET, ATTACKS, PROBES, 0, data=data)
    campaign = Campaign(ModelSpec(str(world.original)), ModelSpec(str(world.reference)), models, plan, data, tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        remote = run_campaign(campaign, "ray", jobs=2, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    for name, entry in zip(names, remote, strict=True):
        local = json.loads((campaign_run[0] / name / "results.json").read_text())
        assert entry["name"] == name and entry["results"]["cells"] == local["cells"], name
        assert entry["results"]["verdict"]["label"] == local["verdict"]["label"]


def test_a_self_audit_has_no_pieces_of_its_own_for_the_unlearned_model(world, data):
    """The unlearned model given as the original: its pieces are the original's, which workers compute once."""
    from auditor.campaign.pieces_on_workers import independent_pieces

    config = config_for(world, data, world.original, None)
    assert {piece.role for piece in independent_pieces(config)} == {"original", "reference"}
    other = independent_pieces(config_for(world, data, world.reference, None))
    assert sum(piece.role == "unlearned" for piece in other) == len(other) // 3
