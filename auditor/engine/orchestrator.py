"""Plan -> attacks x probes -> scores, each finished piece checkpointed for ``--resume``.

Every attack runs on the unlearned model and, with the same seed and budget, on
the reference; every probe runs on the original, the unlearned model, the
reference and each attacked model. A probe result is stored as soon as it is
finished, under a key made of everything it depends on (model fingerprints,
attack, seed, probe, the code of both, data, prompt format), so a resumed or repeated run
recomputes nothing that finished, and an interrupted run resumed gives the same
scores as an uninterrupted one. Every model load, attack and computed probe
result is a timed phase (``auditor.engine.progress``); a reused piece is not.

Memory: the original is probed and attacked (the self-check) before the other
models' weights are read, then dropped; an attack's models are dropped once
probed; relearning variants are LoRA adapters on the attacked model's own
weights. At most two models as given and one attacked copy are resident at once
(docs/MEMORY.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

from auditor.data import sample_items
from auditor.engine.early_stop import EarlyStop
from auditor.engine.pieces import PieceStore
from auditor.engine.plan import PlannedAttack, registered_probe
from auditor.engine.progress import PhaseRecorder
from auditor.engine.records import AuditConfig, AuditScores, ScoreKey, floor_data
from auditor.lm.ledger import bare_rates
from auditor.lm.memory import free_memory, free_memory_of_large, is_large
from auditor.lm.models import LoadedModel, check_compatible, load_model, numerics
from auditor.lm.routing import RoutedScoringModel
from auditor.lm.scoring import ScoringModel, context_length
from auditor.plugins import Probe, RunContext
from auditor.provenance import code_digest, runtime_versions
from auditor.registry import PROBES
from auditor.types import NO_ATTACK, AttackResult, AuditData, ProbeResult


class Orchestrator:
    """Runs a plan on loaded models, checkpointing every finished probe result."""

    def __init__(self, config: AuditConfig, data: AuditData, log: Callable[[str], None] = lambda _: None):
        self.config, self.data = config, data
        self.store = PieceStore(config.cache_dir)
        self.phases = PhaseRecorder(log)
        self.models: dict[str, LoadedModel] = {}
        self._reference_lm: ScoringModel | None = None  # the reference's scorer, shared by its probes
        self._attack_code = {p.attack.spec: code_digest(type(p.attack)) for p in config.plan.configurations()}
        self._numerics = numerics(config.original, config.unlearned, config.reference)

    def load(self, roles: tuple[str, ...] = ("original", "unlearned", "reference"), measure: bool = True) -> None:
        """Load the models of ``roles`` that the audit has, check each against the original, and (``measure``)
        time the original's bare throughput (the cost ledger's yardstick). Lines are logged once all are loaded and
        checked, so a bad model gives one error line only."""
        specs = {
            "original": self.config.original,
            "unlearned": self.config.unlearned,
            "reference": self.config.reference,
        }
        with self.phases.held():
            for role, spec in specs.items():
                if spec is None or role not in roles:
                    continue
                with self.phases.phase(f"load {role}"):
                    self.models[role] = load_model(spec)
                if role != "original" and "original" in self.models:
                    check_compatible(self.models["original"], self.models[role], role)
            if measure and "original" in self.models:
                with self.phases.phase("bare throughput of the original"):
                    original = self.models["original"]
                    self.phases.bare = bare_rates(original.model, context_length(original.model, original.tokenizer))

    def _context(self, seed: int, data: AuditData | None = None) -> RunContext:
        reference = self.models.get("reference")
        return RunContext(
            data=data or self.data,
            seed=seed,
            work_dir=self.config.cache_dir,
            progress=self.config.progress,
            prompts=self.config.prompts,
            reference_lm=self._reference_lm if reference is not None else None,
        )

    def _piece_key(self, fingerprint: str, attack: str, seed: int | None, probe: Probe, data: AuditData) -> str:
        return self.store.key(
            {
                "model": fingerprint,
                "reference": self.models["reference"].fingerprint if "reference" in self.models else None,
                "attack": attack,
                "seed": seed,
                "probe": probe.spec,
                "code": {"probe": code_digest(type(probe)), "attack": self._attack_code.get(attack)},
                "versions": {**runtime_versions(), "numerics": self._numerics},
                "data": {name: getattr(data, name).fingerprint for name in data.available()},
                "prompt": self.config.prompts.key,
            }
        )

    def _probe_all(
        self,
        label: str,
        fingerprint: str,
        attack: str,
        seed: int | None,
        data: AuditData,
        lm_factory: Callable,
        skip_reason: Callable[[], str | None] = lambda: None,
        phase_label: str | None = None,
    ) -> dict[str, ProbeResult]:
        """Every probe of the plan on one model (or attacked model), each reused from the store when finished.

        ``phase_label`` names the model in the phase lines (default: ``label``)."""
        holder: dict = {}
        out = {}
        for probe in self.config.plan.probes:

            def compute(probe=probe) -> ProbeResult:
                missing = probe.missing_data(data)
                reason = skip_reason() or (f"no {', '.join(missing)} data given" if missing else None)
                if reason:
                    return ProbeResult(probe.name, label, "", probe.aggregate, None, (), "skipped", reason)
                if "lm" not in holder:
                    holder["lm"] = lm_factory()
                return probe.run(holder["lm"], self._context(self.config.seed if seed is None else seed, data), label)

            key = self._piece_key(fingerprint, attack, seed, probe, data)
            phase = f"probe {probe.name} on {phase_label or label}"
            out[probe.name] = self.store.get_or_compute(key, self.phases.timed(phase, compute))
        return out

    def run(self, on_plain: Callable[[AuditScores], None] | None = None) -> AuditScores:
        """Run every attack and probe of the plan (loading the models first if needed).

        ``on_plain`` sees the scores of the models as given (no attack yet, no collateral), before any attack runs.
        """
        if not self.models:
            self.load()
        fingerprints = {role: m.fingerprint for role, m in self.models.items()}
        controlled = "reference" in self.models
        results, floors, attacks, collateral = self._run_roles(tuple(self.models), on_plain, collateral=True)
        return AuditScores(results, floors, attacks, fingerprints, controlled, collateral, self.data.subjects())

    def run_shared(self, plain: bool = True, part: int = 0, parts: int = 1) -> None:
        """Only the pieces every audit of this original (against this reference, if any) shares: those models as
        given unless not ``plain``, and under every ``parts``-th configuration of the plan from ``part`` on, stored
        for the audits that follow."""
        roles = ("original", "reference") if self.config.reference is not None else ("original",)
        if not self.models:
            self.load(roles)
        self._run_roles(roles, plain=plain, configs=self.config.plan.configurations()[part::parts])

    def run_piece(self, role: str, attack: str | None = None, seed: int | None = None) -> None:
        """One independent piece, stored for the audit that follows: the model of ``role`` as given (its collateral
        check and floor included) when no ``attack``, else under that configuration of the plan with ``seed``."""
        if not self.models:
            self.load((role, "reference"), measure=False)  # the reference's scorer serves some probes of each model
        configs = tuple(c for c in self.config.plan.configurations() if c.id == attack)
        self._run_roles((role,), plain=attack is None, collateral=True, configs=configs, seed=seed)

    def _run_roles(
        self,
        roles: tuple[str, ...],
        on_plain: Callable[[AuditScores], None] | None = None,
        plain: bool = True,
        collateral: bool = False,
        configs: tuple[PlannedAttack, ...] | None = None,
        seed: int | None = None,
    ) -> tuple[dict, dict, dict[str, dict[str, list[AttackResult]]], dict[str, ProbeResult]]:
        """Probe the models of ``roles`` as given (unless not ``plain``; with the ``collateral`` check first) and run
        every configuration of the plan (or ``configs``; each with its seeds, or ``seed`` only), probing each
        attacked model: on the original right after its own probes (the self-check), which is then dropped, then on
        the reference and the unlearned model once all are probed as given. A search stops for the unlearned model
        once it has brought back the original's knowledge (``EarlyStop``)."""
        from auditor.engine.attack_runner import run_attack

        self._reference_lm = ScoringModel(self.models["reference"]) if "reference" in self.models else None
        fingerprints = {role: self.models[role].fingerprint for role in roles}
        results: dict = {}
        floors: dict = {}
        collateral_results: dict[str, ProbeResult] = {}
        floor = floor_data(self.data) if "reference" not in self.models else None
        configs = self.config.plan.configurations() if configs is None else configs
        attacks: dict[str, dict[str, list[AttackResult]]] = {c.id: {} for c in configs}
        stop = EarlyStop(self.config.plan, self.data, self.config.seed, results, floors)

        def attack(role: str) -> None:
            for planned in configs:
                if role == "unlearned" and stop.skips(planned.id):
                    continue
                attacks[planned.id][role] = [
                    self._attack_and_probe(planned, s, role, run_attack, results, floors, floor)
                    for s in self.config.plan.seeds_for(planned)
                    if seed is None or s == seed
                ]
                free_memory_of_large(self.models[role].model)  # the attacked models are dropped: one at a time
                if role == "unlearned":
                    stop.update(planned)
            self._release("original")  # the self-check is done: no attack runs on it again

        for role in roles if plain else ():
            collateral_results.update(self._probe_as_given(role, results, floors, floor, collateral))
            if role == "original":
                attack(role)  # the self-check, before the other models' weights are read (docs/MEMORY.md)
        if on_plain is not None:
            controlled = "reference" in self.models
            on_plain(AuditScores(results, floors, {}, fingerprints, controlled, {}, self.data.subjects()))
        for role in (r for r in ("original", "reference", "unlearned") if r in roles and r in self.models):
            attack(role)
        return results, floors, attacks, collateral_results

    def _probe_as_given(
        self, role: str, results: dict, floors: dict, floor: AuditData | None, collateral: bool
    ) -> dict[str, ProbeResult]:
        """Every probe on one model as given, into ``results`` (and on the holdout floor into ``floors``); its
        collateral result when asked. Nothing of the model is held once this returns."""
        loaded = self.models[role]
        checked = {role: self._collateral(role)} if collateral and role in ("original", "unlearned") else {}
        lm = self._reference_lm if role == "reference" else None
        factory = (lambda: lm) if lm is not None else (lambda: ScoringModel(loaded))
        for name, result in self._probe_all(role, loaded.fingerprint, NO_ATTACK, None, self.data, factory).items():
            results[ScoreKey.plain(role, name)] = result
        if floor is not None and role in ("original", "unlearned"):
            label = f"{role} (holdout floor)"
            for name, result in self._probe_all(
                role, loaded.fingerprint, NO_ATTACK, None, floor, factory, phase_label=label
            ).items():
                floors[ScoreKey.plain(role, name)] = result
        return checked

    def _release(self, role: str) -> None:
        """Drop a model nothing will use again, and hand its memory back now."""
        if role in self.models and is_large(self.models.pop(role).model):
            free_memory()

    def _collateral(self, role: str) -> ProbeResult:
        """The direct probe on a fixed sample of the retain set, for the original or the unlearned model
        (``mcq`` when the retain items are multiple-choice questions), with the plan's parameters for it."""
        sample = sample_items(self.data.retain, self.config.collateral_items, self.config.seed)
        data = replace(self.data, forget=sample)
        probe = next((p for p in self.config.plan.probes if p.collateral_kind == sample.kind), None)
        if probe is None:
            probe = PROBES.get(registered_probe(lambda cls: cls.collateral_kind == sample.kind))()
        loaded = self.models[role]
        key = self._piece_key(loaded.fingerprint, "collateral", None, probe, data)

        def compute() -> ProbeResult:
            return probe.run(ScoringModel(loaded), self._context(self.config.seed, data), role)

        return self.store.get_or_compute(
            key, self.phases.timed(f"probe {probe.name} on {role} (retain sample)", compute)
        )

    def _attack_and_probe(
        self, planned: PlannedAttack, seed: int, role: str, run_attack, results, floors, floor: AuditData | None
    ) -> AttackResult:
        """Probe the attacked model; the attack itself runs only if some probe result is not stored yet."""
        loaded = self.models[role]
        attack_cache = self.config.cache_dir / "attacks" if self.config.cache_dir else None
        state: dict = {}
        tag = planned.id + (f" seed {seed}" if len(self.config.plan.seeds_for(planned)) > 1 else "")

        def outcome():
            if "outcome" not in state:
                slow = planned.attack.tier == "white-box-compute"  # fine-tunes or calibrates: a line when it starts
                with self.phases.phase(f"attack {tag} on {role}", announce=slow) as phase:
                    folder = re.sub(r"[^\w.=,:-]+", "_", tag)
                    keep = self.config.keep_attacked / role / folder if self.config.keep_attacked else None
                    state["outcome"] = run_attack(planned.attack, loaded, self._context(seed), attack_cache, keep)
                    phase.reused = state["outcome"].reused
            return state["outcome"]

        def routed_lm() -> RoutedScoringModel:
            return RoutedScoringModel([(ScoringModel(v.model), v.trained_groups) for v in outcome().variants])

        def skip_reason() -> str | None:
            result = outcome().result
            return (result.reason or "attack skipped") if result.status == "skipped" else None

        label = f"{role}@{planned.id}"
        targets: list[tuple[AuditData, dict]] = [(self.data, results)]
        targets += [(floor, floors)] if floor is not None and role in ("original", "unlearned") else []
        for data, out in targets:
            phase_label = f"{role}@{tag}" + (" (holdout floor)" if data is floor else "")
            probed = self._probe_all(
                label, loaded.fingerprint, planned.attack.spec, seed, data, routed_lm, skip_reason, phase_label
            )
            for name, result in probed.items():
                out[ScoreKey(role, planned.id, seed, name)] = result
        keyed = loaded.fingerprint + numerics(loaded.spec)  # the weights, their dtype and device: as the attack cache
        record = (planned.attack.spec, self._attack_code[planned.attack.spec], seed, keyed)
        if "outcome" in state:
            self.store.put_attack_record(*record, state["outcome"].result)
            return state["outcome"].result
        return self.store.attack_record(*record) or outcome().result
