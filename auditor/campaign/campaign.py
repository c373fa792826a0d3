"""A campaign: many unlearned models (or the checkpoints of one run) audited against one original, one leaderboard.

Every model gets its audit and reports as ``unlearn-audit audit`` writes them, in ``OUT/NAME/``. The pieces every
audit shares (the original and the reference as given, and under every attack of the plan) are computed once into
the campaign's piece store ``OUT/cache``, which each audit then reads; ``--resume`` keeps that store. Workers
(``engine``: local processes or Ray tasks) compute the shared pieces, split in parts, beside the jobs that make
models (the demo's unlearning runs), and audit each model as soon as the shared pieces and its maker are done.
The campaign writes ``OUT/index.html``, ``OUT/leaderboard.md`` and ``OUT/leaderboard.json``; its exit code is the
worst gate (``worst_exit_code``).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path

from auditor.campaign.pools import worker_pool
from auditor.campaign.roster import CampaignModel
from auditor.engine.audit import run_audit
from auditor.engine.plan import Plan
from auditor.engine.records import AuditConfig
from auditor.errors import EXIT_GATE_FAILED, EXIT_INCONCLUSIVE, EXIT_PASS
from auditor.lm.prompts import PromptFormat
from auditor.lm.quiet import quiet_libraries
from auditor.stats.policy import Policy
from auditor.types import AuditData, ModelSpec


def _argument(spec: ModelSpec) -> str:
    """``spec`` as a model argument of the command line."""
    return f"base={spec.path},adapter={spec.adapter}" if spec.adapter else spec.path


@dataclass(frozen=True)
class Campaign:
    """Everything the audits of a campaign share; picklable for worker processes."""

    original: ModelSpec
    reference: ModelSpec | None
    models: tuple[CampaignModel, ...]
    plan: Plan
    data: AuditData
    out_dir: Path
    policy: Policy = field(default_factory=Policy)
    seed: int = 0
    prompts: PromptFormat = PromptFormat()
    options: dict = field(default_factory=dict)  # recorded in each results.json, with the model's name
    audit_args: str = ""  # the data and plan as ``unlearn-audit audit`` options: each report's command

    def command(self, model: CampaignModel) -> str:
        """The ``unlearn-audit audit`` command that audits ``model`` alone, as recorded in its report."""
        reference = f" --reference {_argument(self.reference)}" if self.reference else ""
        return (
            f"unlearn-audit audit --original {_argument(self.original)} --unlearned {_argument(model.spec)}{reference} "
            f"{self.audit_args} --out {self.out_dir / model.name}"
        ).replace("  ", " ")

    def config(self, model: CampaignModel | None = None) -> AuditConfig:
        """The audit of ``model`` (by default the first; the shared pieces do not depend on which)."""
        unlearned = (model or self.models[0]).spec
        return AuditConfig(
            *(self.original, unlearned, self.reference, self.plan),
            seed=self.seed,
            prompts=self.prompts,
            cache_dir=self.out_dir / "cache",
        )

    @property
    def checkpoints(self) -> bool:
        """Whether the models are checkpoints of one run: every one has a step, and there are two at least."""
        return len(self.models) > 1 and all(model.step is not None for model in self.models)


@dataclass(frozen=True)
class SharedPart:
    """Part ``part`` of ``parts`` of the shared pieces: part 0 probes the original and the reference as given; each
    part runs every ``parts``-th configuration of the plan on them."""

    campaign: Campaign
    part: int
    parts: int
    threads: int


@dataclass(frozen=True)
class ModelAudit:
    """One model's audit in a worker with ``threads`` CPU threads."""

    campaign: Campaign
    model: CampaignModel
    threads: int


def _print_flushed(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def shared_part(job: SharedPart, log: Callable[[str], None] = _print_flushed) -> None:
    """Compute and store one part of the shared pieces (see ``SharedPart``)."""
    import torch

    from auditor.engine.orchestrator import Orchestrator

    torch.set_num_threads(job.threads)
    start = time.perf_counter()
    Orchestrator(job.campaign.config(), job.campaign.data).run_shared(job.part == 0, job.part, job.parts)
    configs = job.campaign.plan.configurations()[job.part :: job.parts]
    names = ", ".join(c.id for c in configs) or "no attack"
    seconds = time.perf_counter() - start
    log(f"[shared {job.part + 1}/{job.parts}] the original and the reference under {names} ({seconds:.0f} s)")


def audit_model(job: ModelAudit, log: Callable[[str], None] = _print_flushed) -> dict:
    """Audit one model of the campaign into ``OUT/NAME``; its index entry."""
    import torch

    torch.set_num_threads(job.threads)
    campaign, model = job.campaign, job.model
    out_dir = campaign.out_dir / model.name
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {**campaign.options, "campaign_model": model.name}
    command = campaign.command(model)
    start = time.perf_counter()
    outputs = run_audit(
        campaign.config(model), campaign.data, campaign.policy, out_dir, command=command, options=options, resume=True
    )
    log(f"[{model.name}] audited: {outputs.results['verdict']['label']} ({time.perf_counter() - start:.0f} s)")
    record = Path(model.spec.path) / "unlearning.json"  # written by `unlearn-audit unlearn` and the demo
    unlearning = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
    return {
        "name": model.name,
        "href": f"{model.name}/report.html",
        "step": model.step,
        "results": outputs.results,
        "unlearning": unlearning,
    }


def worst_exit_code(entries: Sequence[dict]) -> int:
    """The campaign's gate: 1 when any model failed its gate, else 3 when any audit was inconclusive, else 0."""
    codes = {int(entry["results"]["verdict"]["exit_code"]) for entry in entries}
    return next((code for code in (EXIT_GATE_FAILED, EXIT_INCONCLUSIVE) if code in codes), EXIT_PASS)


def run_campaign(
    campaign: Campaign,
    engine: str = "local",
    jobs: int = 1,
    resume: bool = False,
    log: Callable[[str], None] = _print_flushed,
    makers: Mapping[str, tuple[Callable, object]] | None = None,
) -> list[dict]:
    """Audit every model of the campaign; their index entries, in the campaign's order. ``makers``: model name ->
    ``(function, argument)``, the job that writes that model (the demo's unlearning), run beside the shared
    pieces. A model's audit starts as soon as the shared pieces and its maker are done."""
    import torch

    makers = makers or {}
    if not resume:
        shutil.rmtree(campaign.out_dir / "cache", ignore_errors=True)
    threads = torch.get_num_threads()
    workers = min(jobs, len(campaign.models) + len(makers))
    log(f"auditing {len(campaign.models)} model(s) in {workers} {engine} worker(s) ...")
    if workers <= 1 and engine == "local":
        shared_part(SharedPart(campaign, 0, 1, threads), log)
        for function, argument in makers.values():
            function(argument, log)
        return [audit_model(ModelAudit(campaign, model, threads), log) for model in campaign.models]
    threads = max(1, threads // workers)
    with worker_pool(engine, workers, threads, quiet_libraries) as submit:
        shared = [submit(shared_part, SharedPart(campaign, part, workers, threads)) for part in range(workers)]
        made = {name: submit(function, argument) for name, (function, argument) in makers.items()}
        audits: dict[str, Future] = {}
        while len(audits) < len(campaign.models):
            for model in campaign.models:
                needed = [*shared, *([made[model.name]] if model.name in made else [])]
                if model.name not in audits and all(future.done() for future in needed):
                    for future in needed:
                        future.result()  # a failed job fails the campaign here
                    audits[model.name] = submit(audit_model, ModelAudit(campaign, model, threads))
            waiting = [future for future in [*shared, *made.values()] if not future.done()]
            if waiting and len(audits) < len(campaign.models):
                wait(waiting, return_when=FIRST_COMPLETED)
        return [audits[model.name].result() for model in campaign.models]
