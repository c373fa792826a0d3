"""``--engine ray`` on a local Ray instance with two workers: the local engine's results.json cells, bit for bit,
for one audit and for a campaign, and the same again when a worker is killed in the middle of a piece."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import psutil
import pytest
import torch
from conftest import audit_world, show_cells

from auditor.campaign.campaign import Campaign, CampaignModel, run_campaign
from auditor.campaign.pieces_on_workers import run_audit_on_workers
from auditor.engine.plan import DEMO_PRESET, make_plan
from auditor.engine.records import AuditConfig
from auditor.stats.policy import Policy
from auditor.types import ModelSpec

ray = pytest.importorskip("ray", reason="the ray extra is not installed (make install installs it)")

ATTACKS, PROBES = ("quant-rtn:bits=4", "relearn-forget:steps=10"), ("qa", "mia")


@pytest.fixture(scope="module")
def one_thread():
    """Every piece with one CPU thread, as each of two workers has on two threads: the local run here too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance with two CPUs, shared by the tests here (the engine uses a running instance)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_results(world, data, controls, one_thread, tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    return audit_world(world, data, controls["idk"], root, root / "cache", attacks=ATTACKS, probes=PROBES)


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
    torch.set_num_threads(2)
    try:
        config = config_for(world, data, unlearned, out / "cache")
        outputs = run_audit_on_workers(
            config, data, Policy(), out, engine="ray", jobs=2, command="test", options={}, log=lambda _: None
        )
    finally:
        torch.set_num_threads(1)
    return outputs.results


def test_an_audit_on_ray_workers_has_the_local_cells(world, data, controls, local_results, ray_instance, tmp_path):
    results = ray_audit(world, data, controls["idk"], tmp_path)
    assert results["cells"] == local_results["cells"], show_cells(results) + "\n" + show_cells(local_results)
    assert results["verdict"] == local_results["verdict"]
    workers = {phase.get("worker") for phase in results["phases"]} - {None}
    assert len(workers) == 2, "the pieces ran in two worker processes"  # and the driver computed nothing:
    assert not [p for p in results["phases"] if p.get("worker") is None and p["phase"].startswith("probe")]


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


def test_a_worker_killed_mid_piece_is_retried_with_the_same_results(
    world, data, controls, local_results, ray_instance, tmp_path
):
    killer = WorkerKiller()
    killer.start()
    try:
        results = ray_audit(world, data, controls["idk"], tmp_path)
    finally:
        killer.stop.set()
    assert killer.killed is not None, "no Ray worker was seen running a piece"
    assert not psutil.pid_exists(killer.killed) or psutil.Process(killer.killed).status() == psutil.STATUS_ZOMBIE
    assert results["cells"] == local_results["cells"], show_cells(results) + "\n" + show_cells(local_results)


def test_a_campaign_on_ray_workers_has_the_local_cells(world, data, controls, one_thread, ray_instance, tmp_path):
    models = tuple(CampaignModel(name, ModelSpec(str(controls[name]))) for name in ("noop", "retrain"))
    plan = make_plan(DEMO_PRESET, ATTACKS, PROBES, 0, data=data)
    campaign = Campaign(ModelSpec(str(world.original)), ModelSpec(str(world.reference)), models, plan, data, tmp_path)
    local = run_campaign(replace(campaign, out_dir=tmp_path / "local"), log=lambda _: None)
    torch.set_num_threads(2)
    try:
        remote = run_campaign(replace(campaign, out_dir=tmp_path / "ray"), "ray", jobs=2, log=lambda _: None)
    finally:
        torch.set_num_threads(1)
    for here, there in zip(local, remote, strict=True):
        assert here["name"] == there["name"]
        assert here["results"]["cells"] == there["results"]["cells"], here["name"]
        assert here["results"]["verdict"]["label"] == there["results"]["verdict"]["label"]
