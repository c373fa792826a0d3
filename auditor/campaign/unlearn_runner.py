"""Run a bundled unlearning method and write the model with its ``unlearning.json`` record."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from auditor.lm.models import LoadedModel, save_model
from auditor.lm.prompts import PromptFormat
from auditor.plugins import RunContext, UnlearningMethod
from auditor.provenance import code_digest, runtime_versions
from auditor.types import AuditData, ItemSet


def qa_item_scores(loaded: LoadedModel, items: ItemSet, prompts) -> list:
    """The ``qa`` probe's score of each item (detail: output, correct, rouge_l, prob)."""
    from auditor.lm.scoring import ScoringModel
    from auditor.registry import PROBES

    ctx = RunContext(data=AuditData(forget=items, retain=items), prompts=prompts)
    return list(PROBES.get("qa")().run(ScoringModel(loaded), ctx, loaded.spec.label).items)


def qa_knowledge(loaded: LoadedModel, items: ItemSet, prompts, scores: list | None = None) -> dict:
    """Accuracy, ROUGE-L recall and answer probability of a model on a QA item set (the ``qa`` probe);
    ``scores``: its ``qa_item_scores`` when already computed."""
    scored = [s for s in scores or qa_item_scores(loaded, items, prompts) if s.score is not None]

    def mean(key: str) -> float:
        return round(sum(float(s.detail[key]) for s in scored) / max(1, len(scored)), 4)

    return {"n": len(scored), "accuracy": mean("correct"), "rouge_l": mean("rouge_l"), "prob": mean("prob")}


def recipe_inputs(measured: dict[str, ItemSet], data: AuditData) -> dict[str, ItemSet]:
    """The item sets an unlearned model is made from or measured on: ``measured`` and, when given, the forget
    texts that methods train on beside the forget answers (``data.forget_texts``)."""
    return {**measured, **({"forget_texts": data.forget_texts} if data.forget_texts is not None else {})}


def recipe_key(
    method: UnlearningMethod, source_fingerprint: str, inputs: dict[str, ItemSet], seed: int, prompts: PromptFormat
) -> str:
    """sha256 of what an unlearned model is made from: the method's name, parameters and code, the library
    versions, the seed, the source model, the data (``recipe_inputs``) and the prompt format its examples are
    written in; a model whose record holds another key is stale."""
    recipe = {
        "method": method.name,
        "params": method.params,
        "code": code_digest(type(method)),
        "versions": runtime_versions(),
        "seed": seed,
        "source": source_fingerprint,
        "data": {split: items.fingerprint for split, items in inputs.items()},
        "prompts": prompts.key,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()


def is_current(out_dir: Path, key: str) -> bool:
    """Whether ``out_dir`` holds a finished unlearned model made from the recipe ``key``."""
    record = Path(out_dir) / "unlearning.json"
    return record.is_file() and json.loads(record.read_text(encoding="utf-8")).get("recipe_key") == key


def unlearn_to_dir(
    method: UnlearningMethod,
    loaded: LoadedModel,
    forget: ItemSet,
    retain: ItemSet,
    out_dir: Path,
    ctx: RunContext,
    before: dict | None = None,
    neighbours: ItemSet | None = None,
) -> dict:
    """Unlearn, measure before/after knowledge, and write the model and ``unlearning.json`` into ``out_dir``.

    ``before`` is the source model's ``qa_knowledge`` of forget and retain when already measured.
    ``neighbours``: facts of the forget set's kind that are in neither set, measured before and after too
    (what a method breaks beside its target that the retain set does not show).

    Files are staged beside ``out_dir`` and moved in with ``unlearning.json`` last, so a directory
    with that record holds a complete model.
    """
    if before is None:
        before = {
            split: qa_knowledge(loaded, items, ctx.prompts) for split, items in (("forget", forget), ("retain", retain))
        }
    if neighbours is not None:
        before = {**before, "neighbours": qa_knowledge(loaded, neighbours, ctx.prompts)}
    start = time.perf_counter()
    outcome = method.unlearn(loaded, forget, retain, ctx)
    seconds = time.perf_counter() - start
    measured = {"forget": forget, "retain": retain, **({"neighbours": neighbours} if neighbours is not None else {})}
    after = {split: qa_knowledge(outcome.model, items, ctx.prompts) for split, items in measured.items()}
    inputs = recipe_inputs(measured, ctx.data)
    record = {
        "method": method.name,
        "params": method.params,
        "seed": ctx.seed,
        "source": {"model": loaded.spec.label, "fingerprint": loaded.fingerprint},
        "data": {split: items.fingerprint for split, items in inputs.items()},
        "code": code_digest(type(method)),
        "recipe_key": recipe_key(method, loaded.fingerprint, inputs, ctx.seed, ctx.prompts),
        "output_fingerprint": None,  # set once the weights are written
        "before": before,
        "after": after,
        "wall_seconds": round(seconds, 2),
        "info": outcome.info,
    }
    _write_complete(outcome.model, Path(out_dir), record, protect=(loaded.spec.path,))
    return record


def _write_complete(model: LoadedModel, out_dir: Path, record: dict, protect: tuple) -> None:
    """The model and ``record`` (as ``unlearning.json``, with the weights' fingerprint) into ``out_dir``, staged
    beside it and moved in with the record last."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        record["output_fingerprint"] = save_model(model, staging, protect=protect)
        (staging / "unlearning.json").write_text(json.dumps(record, indent=2, default=str))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "unlearning.json").unlink(missing_ok=True)
        for file in sorted(staging.iterdir(), key=lambda f: f.name == "unlearning.json"):  # the record last
            os.replace(file, out_dir / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
