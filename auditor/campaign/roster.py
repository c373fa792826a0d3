"""A campaign's models: each a name (its folder under OUT), where it is, and its training step when the models
are the checkpoints of one run. Light to import: the command line reads it before any model is loaded."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from auditor.errors import UserError
from auditor.types import ModelSpec

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a model's folder under OUT: no separator, no leading dot
STEP = re.compile(r"(?:step|checkpoint|ckpt)[-_]?(\d+)", re.IGNORECASE)  # step100, checkpoint-500, ckpt_3


@dataclass(frozen=True)
class CampaignModel:
    """One audited model: its name (its folder under OUT), where it is, and its training step when a checkpoint."""

    name: str
    spec: ModelSpec
    step: int | None = None


def checked_models(models: Sequence[CampaignModel]) -> tuple[CampaignModel, ...]:
    """The models, with names that are unique folder names; the step of each named ``stepN`` (``checkpoint-N``,
    ``ckptN``) when none was given."""
    seen: set[str] = set()
    out = []
    for model in models:
        if not NAME.fullmatch(model.name) or model.name in ("cache", "models"):
            raise UserError(f"model name {model.name!r}: use letters, digits, '.', '_' or '-' (not cache or models)")
        if model.name in seen:
            raise UserError(f"model name {model.name!r} is given twice")
        seen.add(model.name)
        named = STEP.fullmatch(model.name)
        out.append(replace(model, step=int(named.group(1))) if model.step is None and named else model)
    if not out:
        raise UserError("a campaign needs at least one unlearned model")
    return tuple(out)
