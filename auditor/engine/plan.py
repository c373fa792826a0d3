"""What an audit runs: attacks x probes, from a preset and/or explicit ``--attack``/``--probe`` options."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.errors import UserError
from auditor.plugins import Attack, Probe, parse_param_pairs
from auditor.registry import ATTACKS, PROBES
from auditor.types import DIRECT_PROBE, NO_ATTACK

PRESETS: dict[str, dict] = {
    "quick": {
        "attacks": ["quant-rtn:bits=4", "relearn-forget"],
        "probes": ["qa", "paraphrase", "mia"],
        "seeds": 1,
    },
    "core": {  # one attack of each family (quantization, relearning, benign fine-tuning), every probe: the demo's
        "attacks": ["quant-rtn:bits=4", "relearn-forget", "relearn-retain"],
        "probes": ["qa", "paraphrase", "multihop", "in-context", "in-context-relearn", "verbatim", "mia"],
        "seeds": 1,
    },
    "standard": {  # every attack family once; the sweeps over bits and budgets are thorough's
        "attacks": [
            "quant-rtn:bits=4",
            "quant-bnb:mode=nf4",
            "relearn-forget",
            "relearn-retain",
            "relearn-unrelated",
        ],
        "probes": ["qa", "paraphrase", "multihop", "in-context", "in-context-relearn", "verbatim", "mia"],
        "choice_probes": ["mcq"],
        "seeds": 1,
    },
    "thorough": {
        "attacks": [
            "quant-rtn:bits=8",
            "quant-rtn:bits=4",
            "quant-rtn:bits=3",
            "quant-bnb:mode=int8",
            "quant-bnb:mode=nf4",
            "quant-bnb:mode=fp4",
            "quant-gptq",
            "relearn-forget",
            "relearn-forget:steps=120",
            "relearn-retain",
            "relearn-unrelated",
            "direction-ablation",
            "embedding-attack",
            "jailbreak",
        ],
        "probes": ["qa", "paraphrase", "multihop", "in-context", "in-context-relearn", "verbatim", "mia", "logit-lens"],
        "choice_probes": ["mcq"],  # added when the forget items have choices
        "seeds": 3,
    },
    "tampering": {  # steering instead of weight changes: activations, input embeddings, prompt wrappers
        "attacks": ["direction-ablation", "embedding-attack", "jailbreak"],
        "probes": ["qa", "paraphrase", "multihop", "in-context", "logit-lens"],
        "choice_probes": ["mcq"],
        "seeds": 1,
    },
}
DEMO_PRESET = "core"  # `unlearn-audit demo`'s default: the whole product in a few minutes on 2 cores


@dataclass(frozen=True)
class PlannedAttack:
    """An attack instance and the id its cells carry (the name plus the parameters the user set)."""

    id: str
    attack: Attack


@dataclass(frozen=True)
class Plan:
    attacks: tuple[PlannedAttack, ...]
    probes: tuple[Probe, ...]
    seeds: tuple[int, ...]

    def seeds_for(self, planned: PlannedAttack) -> tuple[int, ...]:
        """Stochastic attacks run once per seed; deterministic ones once."""
        return self.seeds if planned.attack.stochastic else self.seeds[:1]


def parse_attack(text: str) -> PlannedAttack:
    """``NAME[:k=v,...]`` -> an attack instance (parameters checked by the attack)."""
    name, _, params = text.partition(":")
    pairs = [p for p in params.split(",") if p.strip()] if params else []
    values = parse_param_pairs(pairs)
    instance = ATTACKS.get(name.strip())(**values)
    canonical = name.strip() + (":" + ",".join(f"{k}={values[k]}" for k in sorted(values)) if values else "")
    return PlannedAttack(canonical, instance)


def parse_probe(text: str) -> Probe:
    name, _, params = text.partition(":")
    pairs = [p for p in params.split(",") if p.strip()] if params else []
    return PROBES.get(name.strip())(**parse_param_pairs(pairs))


def make_plan(
    preset: str | None, attacks: tuple[str, ...], probes: tuple[str, ...], seed: int, choices: bool = False
) -> Plan:
    """Explicit attacks/probes replace the preset's; the direct probe is always included. The preset's
    ``choice_probes`` join it when the forget items have ``choices``."""
    if preset is not None and preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (use {', '.join(PRESETS)})")
    base = PRESETS[preset or "standard"]
    attack_texts = list(attacks) or base["attacks"]
    probe_texts = list(probes) or base["probes"] + (base.get("choice_probes", []) if choices else [])
    if DIRECT_PROBE not in [p.partition(":")[0] for p in probe_texts]:
        probe_texts = [DIRECT_PROBE, *probe_texts]
    planned = [parse_attack(text) for text in attack_texts if text.strip() != NO_ATTACK]
    ids = [p.id for p in planned]
    if len(set(ids)) != len(ids):
        raise UserError("the same attack is listed twice")
    probe_list = [parse_probe(text) for text in probe_texts]
    names = [p.name for p in probe_list]
    if len(set(names)) != len(names):
        raise UserError("the same probe is listed twice")
    return Plan(tuple(planned), tuple(probe_list), tuple(seed + i for i in range(base["seeds"])))
