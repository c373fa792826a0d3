"""What every attack shares: building its record, and turning items into training examples."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from auditor.lm.adapters import variant_fingerprint
from auditor.lm.models import LoadedModel
from auditor.lm.prompts import PromptFormat
from auditor.lm.training import Example
from auditor.plugins import Attack, AttackedVariant, AttackOutcome
from auditor.types import AttackResult, Item, Status, VariantRecord


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so cached and fresh records are equal."""
    return json.loads(json.dumps(value, default=str))


def outcome(
    attack: Attack,
    loaded: LoadedModel,
    variants: list[AttackedVariant],
    *,
    applied: dict[str, Any],
    started: float,
    cost: dict[str, Any] | None = None,
    status: Status = "ok",
    reason: str | None = None,
) -> AttackOutcome:
    """The attack's record; each variant's ``fingerprint`` becomes the hash of its weights (of its adapter's
    and its input's fingerprint for an adapter: ``variant_fingerprint``; see ``_fingerprint`` for a prompt edit)."""
    records = []
    for variant in variants:
        variant.model.fingerprint = _fingerprint(loaded, variant)
        records.append(VariantRecord(variant.name, variant.model.fingerprint, tuple(sorted(variant.trained_groups))))
    result = AttackResult(
        attack=attack.name,
        params=_plain(attack.params),
        status=status,
        input_fingerprint=loaded.fingerprint,
        reason=reason,
        applied=_plain(applied),
        cost=_plain({**(cost or {}), "seconds": round(time.perf_counter() - started, 3)}),
        variants=tuple(records),
    )
    return AttackOutcome(result, variants)


def _fingerprint(loaded: LoadedModel, variant: AttackedVariant) -> str:
    """The variant's fingerprint; with a prompt edit, that of its weights (its input's when it shares them) and
    of the edit."""
    edit, model = variant.model.prompt_edit, variant.model.model
    if edit is not None and model is loaded.model and variant.adapter is None:
        weights = loaded.fingerprint  # the input's own weights: no need to hash them again
    else:
        weights = variant_fingerprint(loaded.fingerprint, model, variant.adapter)
    if edit is None:
        return weights
    return hashlib.sha256(f"{weights}\n{getattr(edit, 'key', repr(edit))}".encode()).hexdigest()


def skipped(attack: Attack, loaded: LoadedModel, reason: str, started: float) -> AttackOutcome:
    """A record that says why nothing was produced; it never counts as evidence."""
    return outcome(attack, loaded, [], applied={}, started=started, status="skipped", reason=reason)


def variant_label(loaded: LoadedModel, attack: Attack, name: str = "main") -> str:
    """The label an attacked copy carries in place of its path."""
    suffix = "" if name == "main" else f"#{name}"
    return f"{loaded.spec.label}@{attack.spec}{suffix}"


def item_examples(items: Iterable[Item], prompts: PromptFormat) -> list[Example]:
    """Training examples that teach ``items``: QA as prompt/completion, texts whole, choices by the right one."""
    examples = []
    for item in items:
        if item.question is not None and item.answer is not None:
            examples.append(Example(prompts.prompt(item.question), prompts.completion(item.answer)))
        elif item.question is not None and item.choices and item.answer_index is not None:
            examples.append(Example(prompts.prompt(item.question), prompts.completion(item.choices[item.answer_index])))
        elif item.text:
            examples.append(Example("", item.text))
    return examples


def subject_folds(items: Sequence[Item], k: int, seed: int) -> list[list[str]]:
    """The items' subject keys cut into ``k`` groups, shuffled by ``seed`` (the same seed, the same folds)."""
    keys = sorted({item.key for item in items})
    random.Random(seed).shuffle(keys)
    return [sorted(keys[i::k]) for i in range(k)]


def empty_fold_reason(items: Sequence[Item], folds: list[list[str]]) -> str | None:
    """Why ``folds`` cannot be used (a fold without subjects), or None."""
    if all(folds):
        return None
    return f"{len(folds)} folds need as many forget subjects (found {len({item.key for item in items})})"


def fold_training_sets(
    items: Sequence[Item], folds: list[list[str]], prompts: PromptFormat
) -> Iterator[tuple[str, list[str], list[Item], list[Example]]]:
    """Per fold: its variant's name, its held-out subjects, the other folds' items and their training examples."""
    for index, held_out in enumerate(folds):
        kept = set(held_out)
        trained = [item for item in items if item.key not in kept]
        yield f"fold{index}", held_out, trained, item_examples(trained, prompts)


def calibration_texts(items: Iterable[Item], prompts: PromptFormat) -> list[str]:
    """Plain texts of ``items`` (prompt + completion, or the text), e.g. for GPTQ calibration."""
    return [ex.prompt + ex.completion for ex in item_examples(items, prompts)]
