"""What an audit runs: attacks x probes, from a preset and/or explicit ``--attack``/``--probe`` options."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.errors import UserError
from auditor.plugins import Attack, Probe, parse_param_pairs, parse_spec
from auditor.registry import ATTACKS, PROBES
from auditor.types import NO_ATTACK, AuditData, ProbeRoles

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
            "relearn-forget:epochs=9,steps=120",
            "relearn-retain",
            "relearn-unrelated",
            "direction-ablation",
            "embedding-attack",
            "jailbreak",
        ],
        "probes": ["qa", "paraphrase", "multihop", "in-context", "in-context-relearn", "verbatim", "mia", "logit-lens"],
        "choice_probes": ["mcq"],  # added when the forget items have choices
        "seeds": 3,
        "budget": 4.0,
    },
    "tampering": {  # steering instead of weight changes: activations, input embeddings, prompt wrappers
        "attacks": ["direction-ablation", "embedding-attack", "jailbreak"],
        "probes": ["qa", "paraphrase", "multihop", "in-context", "logit-lens"],
        "choice_probes": ["mcq"],
        "seeds": 1,
    },
    "adaptive": {  # core's attack families, each searched over its strengths within 4x the fixed plan's cost
        "attacks": ["quant-rtn:bits=4", "relearn-forget", "relearn-retain"],
        "probes": ["qa", "paraphrase", "multihop", "in-context", "mia", "logit-lens"],
        "choice_probes": ["mcq"],
        "seeds": 1,
        "budget": 4.0,
    },
}
DEMO_PRESET = "core"  # `unlearn-audit demo`'s default: the whole product in a few minutes on 2 cores
FIXED_BUDGET = 1.0  # an attack budget of 1: each planned configuration alone, no search


@dataclass(frozen=True)
class PlannedAttack:
    """An attack instance and the id its cells carry (the name plus the parameters the user set)."""

    id: str
    attack: Attack


@dataclass(frozen=True)
class Search:
    """The adaptive search of one planned attack: the configurations it tries, the planned one first.

    Its cells (attack id ``id``) are cross-fitted: the configuration is chosen on one half of the forget
    subjects and scored on the other (``auditor.engine.adaptive``)."""

    id: str
    planned: PlannedAttack
    configs: tuple[PlannedAttack, ...]
    costs: tuple[float, ...]  # each configuration's cost, in units of the planned one's
    budget: float
    left_out: tuple[str, ...] = ()  # configurations of the search space the budget did not reach

    @property
    def family(self) -> str:
        return self.planned.attack.family_name()


@dataclass(frozen=True)
class Plan:
    attacks: tuple[PlannedAttack, ...]
    probes: tuple[Probe, ...]
    seeds: tuple[int, ...]
    searches: tuple[Search, ...] = ()
    budget: float = FIXED_BUDGET

    def seeds_for(self, planned: PlannedAttack) -> tuple[int, ...]:
        """Stochastic attacks run once per seed; deterministic ones once."""
        return self.seeds if planned.attack.stochastic else self.seeds[:1]

    def configurations(self) -> tuple[PlannedAttack, ...]:
        """Every configuration to run: the planned attacks, then those only the searches try (each once)."""
        seen: dict[str, PlannedAttack] = {p.id: p for p in self.attacks}
        for search in self.searches:
            for config in search.configs:
                seen.setdefault(config.id, config)
        return tuple(seen.values())

    def roles(self) -> ProbeRoles:
        """What the plan's probes are, as each declares it: direct (by rank), membership, past the output."""
        ranked = sorted((p.direct_rank, p.name) for p in self.probes if p.direct_rank is not None)
        return ProbeRoles(
            direct=tuple(name for _, name in ranked),
            membership=frozenset(p.name for p in self.probes if p.membership),
            past_output=frozenset(p.name for p in self.probes if p.looks_past_output),
        )

    def families(self) -> dict[str, str]:
        """Attack id (planned attacks and searches) -> its family."""
        return {p.id: p.attack.family_name() for p in self.attacks} | {s.id: s.family for s in self.searches}


def parse_attack(text: str) -> PlannedAttack:
    """``NAME[:k=v,...]`` -> an attack instance (parameters checked by the attack)."""
    name, values = parse_spec(text)
    instance = ATTACKS.get(name)(**values)
    canonical = name + (":" + ",".join(f"{k}={values[k]}" for k in sorted(values)) if values else "")
    return PlannedAttack(canonical, instance)


MIN_CONFIG_COST = 0.25  # no configuration costs less than this share of the planned one: its probes are never free
SEARCH_SUFFIX = "~adaptive"  # a search's cells carry the planned attack's id plus this


def _search_entry(planned: PlannedAttack, entry: str) -> PlannedAttack:
    """One entry of a search space: ``k=v,...`` over the planned attack's own parameters, or ``name:k=v,...``."""
    name = planned.attack.name
    head, sep, _ = entry.partition(":")
    if sep or "=" not in entry:
        found = parse_attack(entry)
        if found.attack.family_name() != planned.attack.family_name():
            raise ValueError(f"{name}: search entry {entry!r} is not of the {planned.attack.family_name()} family")
        return found
    given = dict(p.split("=", 1) for p in planned.id.partition(":")[2].split(",") if p)
    merged = {**given, **parse_param_pairs([p for p in entry.split(",") if p.strip()])}
    return parse_attack(name + ":" + ",".join(f"{k}={v}" for k, v in merged.items()))


def plan_search(planned: PlannedAttack, budget: float, data: AuditData | None = None) -> Search | None:
    """The configurations a search of ``planned`` tries within ``budget`` (a multiple of its cost): the planned
    one, then its search space cheapest first (the listed order among equals), while the costs add up to at most
    the budget. None when the attack declares no search space."""
    space = [_search_entry(planned, entry) for entry in type(planned.attack).search_space]
    if not space:
        return None
    unit = planned.attack.cost(data)
    relative = {c.id: max(MIN_CONFIG_COST, c.attack.cost(data) / unit if unit > 0 else 1.0) for c in space}
    configs, costs, spent, left_out = [planned], [1.0], 1.0, []
    seen = {planned.attack.spec}
    for config in sorted(space, key=lambda c: relative[c.id]):
        if config.attack.spec in seen:
            continue
        seen.add(config.attack.spec)
        if spent + relative[config.id] > budget + 1e-9:
            left_out.append(config.id)
            continue
        configs.append(config)
        costs.append(round(relative[config.id], 4))
        spent += relative[config.id]
    return Search(planned.id + SEARCH_SUFFIX, planned, tuple(configs), tuple(costs), budget, tuple(left_out))


def registered_probe(wanted) -> str:
    """The name of the first registered probe whose class ``wanted`` accepts (e.g. the one that asks the forget
    questions as given)."""
    return next(name for name in PROBES.names() if wanted(PROBES.get(name)))


def parse_probe(text: str) -> Probe:
    name, values = parse_spec(text)
    return PROBES.get(name)(**values)


def make_plan(
    preset: str | None,
    attacks: tuple[str, ...],
    probes: tuple[str, ...],
    seed: int,
    choices: bool = False,
    budget: float | None = None,
    data: AuditData | None = None,
) -> Plan:
    """Explicit attacks/probes replace the preset's; the direct probe is always included. The preset's
    ``choice_probes`` join it when the forget items have ``choices``. ``budget`` (default: the preset's, else
    1) above 1 searches each attack's strength within that multiple of its planned configuration's cost on
    ``data`` (when given: a fine-tune's steps follow the size of what it trains on)."""
    if preset is not None and preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (use {', '.join(PRESETS)})")
    base = PRESETS[preset or "standard"]
    budget = float(base.get("budget", FIXED_BUDGET) if budget is None else budget)
    if not budget >= FIXED_BUDGET:
        raise UserError(f"the attack budget is a multiple of the fixed plan's cost: at least 1, got {budget:g}")
    attack_texts = list(attacks) or base["attacks"]
    probe_texts = list(probes) or base["probes"] + (base.get("choice_probes", []) if choices else [])
    direct = registered_probe(lambda cls: cls.direct_rank == 0)
    if direct not in [p.partition(":")[0] for p in probe_texts]:
        probe_texts = [direct, *probe_texts]
    planned = [parse_attack(text) for text in attack_texts if text.strip() != NO_ATTACK]
    ids = [p.id for p in planned]
    if len(set(ids)) != len(ids):
        raise UserError("the same attack is listed twice")
    probe_list = [parse_probe(text) for text in probe_texts]
    names = [p.name for p in probe_list]
    if len(set(names)) != len(names):
        raise UserError("the same probe is listed twice")
    searches = [plan_search(p, budget, data) for p in planned] if budget > FIXED_BUDGET else []
    seeds = tuple(seed + i for i in range(base["seeds"]))
    return Plan(tuple(planned), tuple(probe_list), seeds, tuple(s for s in searches if s is not None), budget)
