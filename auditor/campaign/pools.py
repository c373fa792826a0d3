"""Where a batch of independent jobs runs: a local process pool, or Ray tasks (the ``ray`` extra).

A leaderboard run (the demo: many methods, one audit each) is a batch of
independent jobs. ``local`` runs them in spawned worker processes on this
machine. ``ray`` submits each as a Ray task to the running Ray instance (a
cluster when ``RAY_ADDRESS`` names one, else a local instance started here and
stopped at the end), asking for the CPU threads the job uses and, on a machine
with GPUs, an equal share of them: the same code scales from one machine to a
cluster. Either way a job's result comes back as a ``concurrent.futures.Future``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from auditor.errors import UserError

ENGINES = ("local", "ray")

Submit = Callable[..., Future]  # submit(fn, *args): fn(*args) in a worker


def _in_task(initializer: Callable[[], None], fn: Callable, *args: Any) -> Any:
    """A Ray task's body: the worker set up as a local pool's initializer would, then the job."""
    initializer()
    return fn(*args)


def require_ray():
    """The ``ray`` module, or one clear line on how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'unlearn-audit[ray]'") from None
    return ray


@contextmanager
def worker_pool(engine: str, workers: int, threads: int, initializer: Callable[[], None]) -> Iterator[Submit]:
    """A ``submit`` that runs jobs ``workers`` at a time, each with ``threads`` CPU threads (see the module doc)."""
    if engine == "local":
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer) as pool:
            yield pool.submit
        return
    if engine != "ray":
        raise UserError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    ray = require_ray()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every worker's progress line reaches the driver, none folded
    started = not ray.is_initialized()
    if started and os.environ.get("RAY_ADDRESS"):
        ray.init()  # the cluster's own resources
    elif started:
        ray.init(num_cpus=workers * threads, include_dashboard=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    # a task whose worker dies (a node lost, a process killed) runs again: its finished pieces are kept
    task = ray.remote(_in_task).options(num_cpus=threads, num_gpus=gpus / workers if gpus else 0, max_retries=3)
    try:
        yield lambda fn, *args: task.remote(initializer, fn, *args).future()
    finally:
        if started:
            ray.shutdown()
