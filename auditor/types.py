"""Frozen records that flow between loading, attacks, probes, scoring and reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from auditor.errors import UserError

Status = Literal["ok", "skipped", "fallback"]
Label = Literal["NOT_UNLEARNED", "HIDDEN", "REMOVED", "INCONCLUSIVE"]
Aggregate = Literal["mean", "auc", "gap", "std_gap"]  # how a probe turns item scores into its K
AGGREGATES: tuple[str, ...] = get_args(Aggregate)
MEMBERSHIP_AGGREGATES = ("auc", "gap", "std_gap")  # aggregates that compare members with non-members
NO_ATTACK = "none"  # the attack id of the models as given
CHANCE_FLOOR = "chance"  # ProbeResult.extras["floor"]: without a reference, each item's detail "chance" is its floor


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from and how to load it."""

    path: str  # directory or hub id
    adapter: str | None = None  # PEFT adapter directory (or hub id) applied over ``path``
    revision: str | None = None
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    allow_pickle: bool = False  # refuse .bin/.pt weights unless asked
    trust_remote_code: bool = False
    device_map: str | None = None  # "auto": spread over every GPU (and the CPU) through accelerate
    batch_size: int | None = None  # sequences per scoring pass; None: automatic, halved on out-of-memory

    @classmethod
    def parse(cls, text: str, **options: Any) -> ModelSpec:
        """Read ``PATH`` or ``base=PATH,adapter=PATH[,revision=REV]``."""
        if "=" not in text:
            return cls(path=text, **options)
        fields = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in {"base", "adapter", "revision"} or not value.strip():
                raise UserError(f"bad model argument {text!r}: expected PATH or base=PATH,adapter=PATH")
            fields[key] = value.strip()
        if "base" not in fields:
            raise UserError(f"bad model argument {text!r}: 'base=' is missing")
        return cls(path=fields["base"], adapter=fields.get("adapter"), revision=fields.get("revision"), **options)

    @property
    def label(self) -> str:
        return f"{self.path}+{self.adapter}" if self.adapter else self.path


@dataclass(frozen=True)
class Item:
    """One forget/retain/holdout item: a question with answers, a text, or a multiple-choice question."""

    id: str
    question: str | None = None
    answer: str | None = None
    text: str | None = None
    choices: tuple[str, ...] = ()
    answer_index: int | None = None  # multiple choice: index into ``choices``
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = ()
    paraphrased_question: str | None = None
    group: str | None = None  # the subject (person, book, ...) the item is about
    relation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """The unit that relearning folds keep together: the subject, else the item itself."""
        return self.group if self.group is not None else self.id


@dataclass(frozen=True)
class ItemSet:
    """A named, fingerprinted tuple of items of one kind ("qa", "text" or "choice")."""

    name: str
    kind: Literal["qa", "text", "choice"]
    items: tuple[Item, ...]
    source: str
    fingerprint: str

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class AuditData:
    """Every item set an audit may use; probes declare which ones they need."""

    forget: ItemSet
    retain: ItemSet
    holdout: ItemSet | None = None  # same distribution, seen by no model
    multihop: ItemSet | None = None  # composed questions about forget subjects
    forget_texts: ItemSet | None = None  # passages for verbatim continuation and text MIA
    holdout_texts: ItemSet | None = None
    unrelated: ItemSet | None = None  # text unrelated to the forget set (benign fine-tuning)

    def available(self) -> list[str]:
        return [name for name in self.__dataclass_fields__ if getattr(self, name) is not None]

    def subjects(self) -> dict[str, str]:
        """Item id -> the subject it is about, for every item of every set that names one."""
        return {
            item.id: item.group
            for name in self.available()
            for item in getattr(self, name).items
            if item.group is not None
        }


@dataclass(frozen=True)
class VariantRecord:
    """One model an attack produced, and which subjects its fine-tune saw."""

    name: str
    fingerprint: str
    trained_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class AttackResult:
    """What an attack did to one model: what it applied, at what cost, with which outcome."""

    attack: str
    params: dict[str, Any]
    status: Status
    input_fingerprint: str
    reason: str | None = None  # why skipped / why a fallback ran
    applied: dict[str, Any] = field(default_factory=dict)  # what was actually done
    cost: dict[str, Any] = field(default_factory=dict)  # steps, examples, seconds
    variants: tuple[VariantRecord, ...] = ()


@dataclass(frozen=True)
class ItemScore:
    """A probe's score of one item, with what a reviewer needs to see it."""

    item_id: str
    score: float | None  # None: not scored (e.g. no held-out variant for this subject)
    member: bool | None = None  # membership inference: True for a member (forget), False otherwise
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeResult:
    """A probe's per-item knowledge scores on one model and their aggregate."""

    probe: str
    model: str  # which model variant, e.g. "unlearned" or "unlearned@quant-rtn:bits=4"
    metric: str  # what ``score`` measures
    aggregate: Aggregate
    value: float | None
    items: tuple[ItemScore, ...]
    status: Status = "ok"
    reason: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeRoles:
    """What the plan's probes are, as the verdict reads them; each probe declares its own (``plugins.Probe``)."""

    direct: tuple[str, ...] = ()  # ask the forget questions as given, by rank: the first informative is the direct cell
    membership: frozenset[str] = frozenset()  # compare members with non-members
    past_output: frozenset[str] = frozenset()  # read likelihoods or internals, not only what the model says


@dataclass(frozen=True)
class Cell:
    """Residual knowledge r(attack, probe) with its bootstrap interval."""

    attack: str
    probe: str
    residual: float | None
    ci_low: float | None
    ci_high: float | None
    k_original: float | None
    k_unlearned: float | None
    k_reference: float | None
    k_reference_attacked: float | None
    n_items: int
    controlled: bool  # False when the floor came from the holdout set instead of a reference model
    status: Status = "ok"
    note: str | None = None
    n_subjects: int | None = None  # subjects resampled with all their items; None: items resampled one by one
    zero_bound: float | None = None  # the upper bound this cell would reach at zero residual (its sampling spread)
    family: str = NO_ATTACK  # the attack's family ("none" for the models as given)
    self_check: float | None = None  # the original's own residual under this attack (1: kept); None: not measured


@dataclass(frozen=True)
class Verdict:
    """The audit's conclusion and the cells that decided it."""

    label: Label
    deciding_cells: tuple[tuple[str, str], ...]
    reasons: tuple[str, ...]
    collateral: float | None  # relative drop of retain knowledge versus the original
    gate_passed: bool
    failures: tuple[str, ...] = ()
    exit_code: int = 0  # the CLI's exit status for this verdict (see auditor.errors)
    certified_bound: float | None = None  # the largest upper bound over the informative cells
    limiting_cells: tuple[tuple[str, str], ...] = ()  # the cells whose upper bound keeps it from REMOVED
    direct_cell: tuple[str, str] | None = None  # what a naive evaluation sees: the informative direct cell
