"""Base classes of the three plugin kinds: attacks, probes and unlearning methods.

A plugin is a small class whose metadata are class attributes (garak style):
``name``, a one-line ``summary``, the ``paper`` it follows, the extra
``requires`` it imports, and ``defaults`` for its parameters. Parameters given
by the user are checked against ``defaults`` and cast to the default's type.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from auditor.errors import UserError
from auditor.lm.prompts import DEFAULT_FORMAT, PromptFormat
from auditor.types import AGGREGATES, MEMBERSHIP_AGGREGATES, Aggregate, AttackResult, AuditData, ItemSet, ProbeResult

if TYPE_CHECKING:
    import numpy as np

    from auditor.lm.scoring import TokenStats

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def cast_param(name: str, value: Any, default: Any) -> Any:
    """Cast ``value`` (often a CLI string) to the type of ``default``."""
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            low = value.lower()
            if low not in _TRUE | _FALSE:
                raise ValueError(value)
            return low in _TRUE
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in value.split("|") if part.strip())
    except ValueError:
        raise UserError(f"parameter {name}={value!r}: expected {type(default).__name__}") from None
    return value


def parse_param_pairs(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["bits=4", "group_size=64"]`` -> ``{"bits": "4", "group_size": "64"}``."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad parameter {pair!r}: expected key=value")
        params[key.strip()] = value.strip()
    return params


def parse_spec(text: str) -> tuple[str, dict[str, str]]:
    """``NAME[:k=v,...]`` -> the name and its parameters, as every command writes a plugin."""
    name, _, params = text.partition(":")
    return name.strip(), parse_param_pairs([p for p in params.split(",") if p.strip()])


class Plugin:
    """Shared metadata and parameter handling."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str | None] = None
    requires: ClassVar[tuple[str, ...]] = ()  # importable module names of optional extras
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any):
        unknown = [key for key in params if key not in self.defaults]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, self.defaults, n=3, cutoff=0.5)
            known = ", ".join(close or sorted(self.defaults)) or "none"
            raise UserError(f"{self.name}: unknown parameter {key!r} (known: {known})")
        self.params: dict[str, Any] = {
            key: cast_param(key, params.get(key, default), default) for key, default in self.defaults.items()
        }
        self.validate()

    def validate(self) -> None:
        """Check parameter values; raise ``UserError`` on a bad one."""

    @classmethod
    def missing_requirements(cls) -> list[str]:
        """Names in ``requires`` that cannot be imported here."""
        return [mod for mod in cls.requires if importlib.util.find_spec(mod) is None]

    @property
    def spec(self) -> str:
        """``name:k=v,...`` with the resolved parameters."""
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))


class LanguageModel(Protocol):
    """What a probe may ask of a model (``auditor.lm.scoring.ScoringModel``, batched and memoized).

    After an attack that fine-tuned on some subjects the model is routed: each request goes to a variant that
    never trained on its subject, so pass ``groups`` (each request's ``Item.key``); without them a routed model
    raises. A request no variant may answer, or one longer than the model's context, gives ``None``.
    """

    def fits(self, texts: Sequence[str], extra: int = 0) -> list[bool]:
        """Whether each text, plus ``extra`` new tokens, fits the model's context."""
        ...

    def token_stats(
        self, pairs: Sequence[tuple[str, str]], groups: Sequence[str] | None = None, moments: bool = False
    ) -> list[TokenStats | None]:
        """Teacher-forced log-probabilities of each (prompt, answer) pair's answer tokens."""
        ...

    def answer_ranks(
        self, pairs: Sequence[tuple[str, str]], groups: Sequence[str] | None = None
    ) -> list[np.ndarray | None]:
        """The logit lens: the rank of each answer token at the position before it, read through the final norm
        and the output head after every layer ([answer tokens, layers] ints; 0 = most likely)."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        stop: Sequence[str] = ("\n",),
        groups: Sequence[str] | None = None,
    ) -> list[str | None]:
        """Greedy continuations, cut at EOS or the first stop string."""
        ...

    def generate_scored(
        self,
        prompts: Sequence[str],
        answers: Sequence[Sequence[str]],
        max_new_tokens: int = 32,
        stop: Sequence[str] = ("\n",),
        groups: Sequence[str] | None = None,
        answer_margin: int | None = None,
    ) -> list[tuple[str, list[TokenStats]] | None]:
        """Each prompt's greedy continuation and the statistics of its candidate answers, from one prefill; with
        ``answer_margin``, at most the longest candidate's tokens plus that many new tokens."""
        ...


@dataclass
class RunContext:
    """What every plugin may use besides the model: data, seed, a scratch folder, device."""

    data: AuditData
    seed: int = 0
    work_dir: Path | None = None
    progress: bool = False
    prompts: PromptFormat = DEFAULT_FORMAT  # question -> prompt, answer -> completion
    reference_lm: LanguageModel | None = None  # the never-trained reference, for reference-based MIA


@dataclass
class AttackedVariant:
    """One model produced by an attack; ``trained_groups`` are subjects its fine-tune saw."""

    model: Any  # auditor.lm.models.LoadedModel
    name: str = "main"
    trained_groups: frozenset[str] = frozenset()
    adapter: Any = None  # the peft model when the variant is a LoRA adapter on its input's weights


@dataclass
class AttackOutcome:
    """An attack's record plus the models it produced (none when skipped)."""

    result: AttackResult
    variants: list[AttackedVariant] = field(default_factory=list)
    reused: bool = False  # loaded from the attack cache, not computed


ATTACK_TIERS = (
    "white-box-static",  # weights or activations changed without training
    "white-box-compute",  # it trains or calibrates
    "black-box",  # prompts only
)


class Attack(Plugin):
    """Model -> model. Works on a copy; never writes the input's files.

    ``family`` names the kind of adversary (REMOVED needs a self-checked cell of every family the plan runs).
    ``search_space`` lists the other strengths the adaptive search tries, cheapest first, each an attack text:
    ``"k=v,..."`` changes this attack's parameters, ``"name:k=v,..."`` is another attack of the family; ``cost``
    is what one configuration costs, in units of the search budget (relative to the planned configuration's).
    """

    tier: ClassVar[str] = "white-box-static"  # one of ATTACK_TIERS
    family: ClassVar[str] = ""  # e.g. "quantization", "relearning"; empty: the attack's own name
    search_space: ClassVar[tuple[str, ...]] = ()  # the adaptive search's other configurations, cheapest first
    stochastic: ClassVar[bool] = False  # draws on the seed (bootstrap over seeds)
    reloadable: ClassVar[bool] = True  # its models save as Hugging Face directories (--keep-attacked)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.tier not in ATTACK_TIERS:
            raise TypeError(f"attack {cls.__name__}: tier must be one of {', '.join(ATTACK_TIERS)}, got {cls.tier!r}")

    @classmethod
    def family_name(cls) -> str:
        """The family this attack belongs to (its own name when it declares none)."""
        return cls.family or cls.name

    def cost(self, data: AuditData | None = None) -> float:
        """What this configuration costs on ``data`` (None: data not known), in any unit its family shares (the
        search compares ratios)."""
        return 1.0

    def apply(self, model, ctx: RunContext) -> AttackOutcome:
        raise NotImplementedError


class Probe(Plugin):
    """Model -> per-item knowledge scores for one form of question."""

    needs: ClassVar[tuple[str, ...]] = ("forget",)  # AuditData fields required
    aggregate: ClassVar[Aggregate] = "mean"  # one of AGGREGATES: how item scores become the probe's K
    looks_past_output: ClassVar[bool] = False  # reads likelihoods or internals, not only what the model says
    # Asks the forget questions as given: the direct cell is the plan's informative direct probe of lowest rank.
    direct_rank: ClassVar[int | None] = None
    collateral_kind: ClassVar[str | None] = None  # the retain-set kind it checks collateral damage on

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("aggregate")
        if isinstance(declared, str) and declared not in AGGREGATES:
            raise TypeError(f"probe {cls.__name__}: aggregate must be one of {', '.join(AGGREGATES)}, got {declared!r}")

    @property
    def membership(self) -> bool:
        """Whether the probe compares members with non-members (its aggregate does)."""
        return self.aggregate in MEMBERSHIP_AGGREGATES

    def missing_data(self, data: AuditData) -> list[str]:
        return [name for name in self.needs if getattr(data, name) is None]

    def run(self, lm: LanguageModel, ctx: RunContext, model_label: str) -> ProbeResult:
        raise NotImplementedError


@dataclass
class UnlearnOutcome:
    """The unlearned model (in memory) and what the method did (resolved settings, cost)."""

    model: Any  # auditor.lm.models.LoadedModel
    info: dict[str, Any] = field(default_factory=dict)


class UnlearningMethod(Plugin):
    """Original model + forget/retain sets -> unlearned model (the input is never changed)."""

    def unlearn(self, model, forget: ItemSet, retain: ItemSet, ctx: RunContext) -> UnlearnOutcome:
        raise NotImplementedError
