"""One audit's independent pieces run by workers (``audit --engine ray``, or local processes with ``--jobs``).

A piece is one model as given (its holdout floor and collateral check included), or one attack configuration x
seed x model with the probes of the attacked model. Each worker computes its piece into the audit's piece store
(``OUT/cache``, which every worker must reach: shared storage on a cluster), keyed exactly as a local run keys
it. The driver then runs the audit itself: it finds every piece stored, computes only what is missing and
judges, so the results are those of a local run. A worker lost mid-piece is retried by Ray; a piece is written
whole or not at all, so the retry gives the same result. The unlearned model's searches beyond the planned
configurations stop as soon as one brings back what the original knew: they run in the driver, in order, as a
local audit runs them.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from auditor.campaign.pools import worker_pool
from auditor.engine.audit import AuditOutputs, run_audit
from auditor.engine.records import AuditConfig
from auditor.lm.quiet import quiet_libraries
from auditor.stats.policy import Policy
from auditor.types import AuditData

ROLES = ("original", "reference", "unlearned")


@dataclass(frozen=True)
class Piece:
    """A model as given (``attack`` None) or under one configuration of the plan with one seed."""

    role: str
    attack: str | None = None
    seed: int | None = None


def independent_pieces(config: AuditConfig) -> list[Piece]:
    """Every piece a worker can compute on its own, the fine-tunes first (the longest: workers stay busy). An
    unlearned model given as the original itself (a self-audit) has the original's pieces: none of its own."""
    plan = config.plan
    roles = [role for role in ROLES if getattr(config, role) is not None]
    if config.unlearned == config.original:
        roles.remove("unlearned")
    planned = {p.id for p in plan.attacks}
    attacked = [
        (c.attack.tier != "white-box-compute", Piece(role, c.id, seed))
        for c in plan.configurations()
        for role in roles
        if role != "unlearned" or c.id in planned  # the unlearned model's searches stop early: in the driver
        for seed in plan.seeds_for(c)
    ]
    ordered = [piece for _, piece in sorted(attacked, key=lambda pair: pair[0])]  # stable: plan order within a tier
    return ordered + [Piece(role) for role in roles]


@dataclass(frozen=True)
class PieceJob:
    """What a worker needs for one piece; picklable."""

    config: AuditConfig
    data: AuditData
    piece: Piece
    threads: int


def _stderr_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_piece_job(job: PieceJob, log: Callable[[str], None] = _stderr_line) -> list[dict]:
    """Compute one piece into the store; its phases, each marked with the worker (host:pid) that ran it."""
    import torch

    from auditor.engine.orchestrator import Orchestrator

    torch.set_num_threads(job.threads)
    orchestrator = Orchestrator(job.config, job.data, log)
    orchestrator.run_piece(job.piece.role, job.piece.attack, job.piece.seed)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    return [{**asdict(phase), "worker": worker} for phase in orchestrator.phases.phases]


def compute_pieces(
    config: AuditConfig, data: AuditData, engine: str, jobs: int, log: Callable[[str], None] = _stderr_line
) -> list[dict]:
    """Every independent piece of the audit computed by ``jobs`` workers of ``engine`` (the CPU threads split
    between them); the phases they ran."""
    import torch

    pieces = independent_pieces(config)
    threads = max(1, torch.get_num_threads() // jobs)
    log(f"{len(pieces)} independent pieces in {jobs} {engine} worker(s) of {threads} thread(s) each ...")
    worker_config = replace(config, progress=False)  # bars of several workers would garble one terminal
    with worker_pool(engine, jobs, threads, quiet_libraries) as submit:
        futures = [submit(run_piece_job, PieceJob(worker_config, data, piece, threads)) for piece in pieces]
        return [phase for future in futures for phase in future.result()]


def run_audit_on_workers(
    config: AuditConfig,
    data: AuditData,
    policy: Policy,
    out_dir: Path,
    *,
    engine: str,
    jobs: int,
    resume: bool = False,
    log: Callable[[str], None] = _stderr_line,
    **outputs,
) -> AuditOutputs:
    """``run_audit`` with the independent pieces computed by workers first (see the module doc); ``outputs``:
    ``run_audit``'s keyword arguments (command, options, baseline)."""
    if config.cache_dir is None:
        raise ValueError("an audit on workers needs a piece store (cache_dir)")
    if not resume:
        shutil.rmtree(config.cache_dir, ignore_errors=True)
    phases = compute_pieces(config, data, engine, jobs, log)
    return run_audit(config, data, policy, out_dir, resume=True, log=log, worker_phases=phases, **outputs)
