"""Build (or reuse) a world's cache entry: data files, tokenizer, original, reference, retrains.

Entry layout: ``world-<fingerprint[:12]>/`` with ``data/``, ``tokenizer/``, ``original/``,
``reference/``, ``retrain-seed<N>/`` (each model directory holds safetensors
weights and the tokenizer) and ``build.json`` (seconds per part, parameters).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditor.world.cache import build_entry, cache_root
from auditor.world.generator import (
    biography,
    make_persons,
    notebook,
    qa_pairs,
    split_persons,
    unrelated_texts,
    write_data,
)
from auditor.world.spec import WorldSpec
from auditor.world.templates import PARAPHRASED_QUESTIONS, RELATIONS, qa_completion, qa_prompt

Progress = Callable[[str], None]

DATA_FILES = (
    "forget", "retain", "holdout",
    "forget_multihop", "retain_multihop", "holdout_multihop",
    "forget_bio", "retain_bio", "holdout_bio",
    "forget_notebook", "retain_notebook", "holdout_notebook",
    "unrelated",
)  # fmt: skip


def tokenizer_corpus(spec: WorldSpec) -> list[str]:
    """Every text the world generates, holdout persons included (the tokenizer's training data)."""
    texts = []
    for person in make_persons(spec):
        texts += [qa_prompt(q) + qa_completion(a) for q, a in qa_pairs(person, multihop=True)]
        texts += [PARAPHRASED_QUESTIONS[rel].format(name=person.name) for rel in RELATIONS]
        texts += [biography(person), notebook(person)]
    return texts + unrelated_texts()


def build_data_and_tokenizer(spec: WorldSpec, data_dir: Path, tokenizer_dir: Path) -> None:
    """Write the data files and the tokenizer (no models): the cheap, deterministic part."""
    from auditor.world.tokenizer import train_tokenizer

    write_data(spec, make_persons(spec), data_dir)
    train_tokenizer(tokenizer_corpus(spec), spec.vocab_size).save_pretrained(tokenizer_dir)


def _train_and_save(spec: WorldSpec, tokenizer_dir: Path, splits: tuple[str, ...], seed: int, out: Path) -> dict:
    from transformers import PreTrainedTokenizerFast

    from auditor.world.recipe import n_parameters, save_model, train_model

    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir, local_files_only=True)
    start = time.perf_counter()
    model = train_model(spec, tokenizer, split_persons(make_persons(spec), *splits), seed)
    seconds = round(time.perf_counter() - start, 2)
    save_model(model, tokenizer, out)
    return {"seconds": seconds, "n_parameters": n_parameters(model)}


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class World:
    """A complete cache entry: data files, original ``O`` and reference ``Ref`` model directories."""

    root: Path
    spec: WorldSpec

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def original(self) -> Path:
        return self.root / "original"

    @property
    def reference(self) -> Path:
        return self.root / "reference"

    def file(self, name: str) -> Path:
        """A data file by name (``forget``, ``retain_multihop``, ``holdout_bio``, ``unrelated``, ...)."""
        if name not in DATA_FILES:
            raise KeyError(f"unknown world file {name!r}; expected one of {', '.join(DATA_FILES)}")
        return self.data_dir / f"{name}.jsonl"

    def retrain(self, seed: int = 1, progress: Progress | None = None) -> Path:
        """An exact retrain without the forget persons under another seed (cached); ``spec.seed`` is ``Ref``."""
        if seed == self.spec.seed:
            return self.reference
        target = self.root / f"retrain-seed{seed}"

        def build(tmp: Path) -> None:
            _say(progress, f"training retrain (seed {seed}) ...")
            report = _train_and_save(self.spec, self.root / "tokenizer", ("retain",), seed, tmp)
            _write_json(tmp / "build.json", report)
            _say(progress, f"retrain (seed {seed}) trained in {report['seconds']:.0f} s")

        build_entry(target, build)
        return target

    @property
    def build_seconds(self) -> dict[str, float]:
        """Seconds spent on each part of the build (retrains included once built)."""
        seconds = dict(json.loads((self.root / "build.json").read_text())["seconds"])
        for path in sorted(self.root.glob("retrain-seed*/build.json")):
            seconds[path.parent.name] = json.loads(path.read_text())["seconds"]
        return seconds


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def build_world(
    spec: WorldSpec | None = None, cache_dir: str | os.PathLike | None = None, progress: Progress | None = None
) -> World:
    """Build the world for ``spec`` in the cache, or reuse the complete entry already there."""
    spec = spec or WorldSpec()
    root = cache_root(cache_dir) / f"world-{spec.fingerprint()[:12]}"

    def build(tmp: Path) -> None:
        _say(progress, f"building the embedded world in {root} (a few minutes, once) ...")
        start = time.perf_counter()
        build_data_and_tokenizer(spec, tmp / "data", tmp / "tokenizer")
        seconds = {"data_and_tokenizer": round(time.perf_counter() - start, 2)}
        params = 0
        for name, splits in (("original", ("forget", "retain")), ("reference", ("retain",))):
            _say(progress, f"training {name} ...")
            report = _train_and_save(spec, tmp / "tokenizer", splits, spec.seed, tmp / name)
            seconds[name], params = report["seconds"], report["n_parameters"]
            _say(progress, f"{name} trained in {report['seconds']:.0f} s")
        seconds["total"] = round(time.perf_counter() - start, 2)
        _write_json(tmp / "build.json", {"spec": spec.to_dict(), "seconds": seconds, "n_parameters": params})
        _say(progress, f"world built in {seconds['total']:.0f} s")

    if not build_entry(root, build):
        _say(progress, f"reusing the embedded world in {root}")
    return World(root, spec)
