"""The records an audit passes between running, judging and writing: its configuration and its scores."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from auditor.engine.plan import Plan
from auditor.lm.prompts import PromptFormat
from auditor.types import NO_ATTACK, AttackResult, AuditData, ModelSpec, ProbeResult


class ScoreKey(NamedTuple):
    """Where a probe result belongs: which model, under which attack (``none``: as given), seed and probe."""

    role: str  # "original", "unlearned" or "reference"
    attack: str  # the attack (or search) id, or NO_ATTACK
    seed: int | None  # None for the models as given
    probe: str

    @classmethod
    def plain(cls, role: str, probe: str) -> ScoreKey:
        """The key of a model as given."""
        return cls(role, NO_ATTACK, None, probe)


@dataclass(frozen=True)
class AuditConfig:
    """Everything an audit depends on besides the data."""

    original: ModelSpec
    unlearned: ModelSpec
    reference: ModelSpec | None
    plan: Plan
    seed: int = 0
    prompts: PromptFormat = PromptFormat()
    cache_dir: Path | None = None  # checkpoints of finished pieces, attack records and adapters
    keep_attacked: Path | None = None  # attacked models saved here for inspection (one folder per role)
    collateral_items: int = 200  # retain items sampled for the collateral-damage check
    progress: bool = False


@dataclass
class AuditScores:
    """What the orchestrator hands to cell computation and reporting."""

    probe_results: dict[ScoreKey, ProbeResult]
    floor_results: dict[ScoreKey, ProbeResult]  # uncontrolled: the same probes on holdout items
    attacks: dict[str, dict[str, list[AttackResult]]]  # attack id -> role -> one result per seed
    fingerprints: dict[str, str]
    controlled: bool
    collateral: dict[str, ProbeResult]  # role -> the direct probe on (a sample of) the retain set
    subjects: dict[str, str]  # item id -> subject, for subject-level resampling


def floor_data(data: AuditData) -> AuditData | None:
    """Without a reference, holdout items stand in for the forget items (the floor of a model that never saw them)."""
    if data.holdout is None:
        return None
    return replace(data, forget=data.holdout, forget_texts=data.holdout_texts, multihop=None, holdout=None)


def status_of(results: list[AttackResult]) -> str:
    """One status for the runs of an attack (its seeds, its models): skipped when every one was, fallback when
    any fell back, else ok."""
    statuses = {r.status for r in results}
    return "skipped" if statuses == {"skipped"} else ("fallback" if "fallback" in statuses else "ok")
