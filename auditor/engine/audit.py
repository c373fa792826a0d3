"""One audit from resolved inputs to files: results.json, samples/, report.html, junit.xml, summary.md.

Everything a user can get wrong is checked before the first model is scored,
and the reports are written only once every piece has finished, so a failed
run never leaves a half-written report (finished pieces stay in ``cache/`` for
``--resume``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from auditor.engine.cells import power_lines
from auditor.engine.judge import judge_plain
from auditor.engine.orchestrator import Orchestrator
from auditor.engine.progress import Phase
from auditor.engine.records import AuditConfig, AuditScores
from auditor.engine.results import build_results, write_samples
from auditor.errors import UserError
from auditor.files import write_json_atomic
from auditor.stats.policy import Policy
from auditor.types import AuditData


@dataclass(frozen=True)
class AuditOutputs:
    results: dict
    out_dir: Path
    files: dict[str, Path]

    @property
    def exit_code(self) -> int:
        return int(self.results["verdict"]["exit_code"])


def read_baseline(path: str | Path | None) -> dict | None:
    """A previous results.json to compare against."""
    if path is None:
        return None
    try:
        baseline = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"baseline {path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    cells = baseline.get("cells") if isinstance(baseline, dict) else None
    wanted = {"attack", "probe", "residual"}
    if not isinstance(cells, list) or not all(isinstance(c, dict) and wanted <= c.keys() for c in cells):
        raise UserError(f"baseline {path} is not an unlearn-audit results.json (no list of cells)")
    return {**baseline, "_source": str(path)}


def run_audit(
    config: AuditConfig,
    data: AuditData,
    policy: Policy,
    out_dir: Path,
    *,
    command: str,
    options: dict,
    baseline: dict | None = None,
    resume: bool = False,
    log: Callable[[str], None] = lambda _: None,
    worker_phases: Sequence[dict] = (),
) -> AuditOutputs:
    """Run the audit and write its outputs into ``out_dir``; ``worker_phases``: the phases of pieces computed by
    workers beforehand (``auditor.campaign.pieces_on_workers``), recorded first."""
    from reports import write_reports
    from reports.markdown import write_step_summary
    from reports.schema import validate_results

    start = time.perf_counter()
    if config.cache_dir is not None and not resume and config.cache_dir == out_dir / "cache":
        shutil.rmtree(config.cache_dir, ignore_errors=True)
    orchestrator = Orchestrator(config, data, log)
    orchestrator.phases.phases.extend(Phase(**phase) for phase in worker_phases)
    orchestrator.load()

    plain: list = []

    def report_power(scores: AuditScores) -> None:
        """The plain cells' power, as the final judgement will have it, before the unlearned model is attacked."""
        cells, power = judge_plain(scores, config, policy)
        plain.extend(cells)
        for line in power_lines(power):
            log(line)

    scores = orchestrator.run(on_plain=report_power)
    seconds = time.perf_counter() - start
    phases = orchestrator.phases.to_json()
    bare = asdict(orchestrator.phases.bare) if orchestrator.phases.bare is not None else None
    results = build_results(config, data, scores, policy, command, options, baseline, seconds, phases, plain, bare)
    validate_results(results)  # before any file: a record the reports cannot read is never half written
    write_samples(out_dir, scores)
    write_json_atomic(out_dir / "results.json", results)
    files = {"results": out_dir / "results.json", **write_reports(results, out_dir)}
    write_step_summary(files["markdown"].read_text(encoding="utf-8"))
    log(f"pieces computed {orchestrator.store.computed}, reused {orchestrator.store.reused}")
    return AuditOutputs(results, out_dir, files)
