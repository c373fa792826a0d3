"""Where independent jobs run: the local process pool, and Ray tasks on a local Ray instance (the ray extra)."""

from __future__ import annotations

import builtins
import os
import sys

import pytest

from auditor.campaign.pools import worker_pool
from auditor.errors import UserError


def mark_worker() -> None:
    os.environ["POOL_TEST_WORKER"] = "set up"


def job(x: int) -> tuple[int, int, str]:
    """What a worker computes, the process it ran in, and what its initializer set."""
    return x * x, os.getpid(), os.environ.get("POOL_TEST_WORKER", "")


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_jobs_run_in_other_processes_set_up_as_workers(engine):
    if engine == "ray":
        ray = pytest.importorskip("ray", reason="the ray extra is not installed (make install installs it)")
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/
    with worker_pool(engine, workers=2, threads=1, initializer=mark_worker) as submit:
        futures = [submit(job, x) for x in range(4)]
        results = [future.result(timeout=300) for future in futures]
    assert [square for square, _, _ in results] == [0, 1, 4, 9]
    assert all(pid != os.getpid() for _, pid, _ in results)
    assert all(mark == "set up" for _, _, mark in results) and "POOL_TEST_WORKER" not in os.environ


def test_ray_missing_is_one_clear_line(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UserError, match=r"pip install 'unlearn-audit\[ray\]'"), worker_pool("ray", 2, 1, print):
        pass
