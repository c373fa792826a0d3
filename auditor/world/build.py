"""Build (or reuse) a world's cache entry: data files, tokenizer, original, reference, retrains.

Entry layout: ``world-<fingerprint[:12]>/`` with ``data/``, ``tokenizer/``, ``original/``,
``reference/``, ``retrain-seed<N>/`` (each model directory holds safetensors
weights and the tokenizer) and ``build.json`` (seconds per part, parameters).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from auditor.files import cache_root
from auditor.lm.quiet import quiet_libraries
from auditor.world.cache import MARKER, build_entry
from auditor.world.generator import (
    biography,
    make_persons,
    notebook,
    qa_pairs,
    split_persons,
    unrelated_texts,
    write_data,
)
from auditor.world.shipped import install, shipped_entry
from auditor.world.spec import WorldSpec
from auditor.world.templates import PARAPHRASED_QUESTIONS, RELATIONS, qa_completion, qa_prompt

Progress = Callable[[str], None]

DATA_FILES = (
    "forget", "retain", "holdout",
    "forget_multihop", "retain_multihop", "holdout_multihop",
    "forget_bio", "retain_bio", "holdout_bio",
    "forget_notebook", "retain_notebook", "holdout_notebook",
    "forget_mcq", "retain_mcq", "holdout_mcq",
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
    report = {"seconds": round(time.perf_counter() - start, 2), "n_parameters": n_parameters(model)}
    save_model(model, tokenizer, out)
    _write_json(out / "build.json", report)
    return report


@dataclass(frozen=True)
class _Job:
    """One model of the world to train: its name, the splits it learns, its seed and where it goes."""

    name: str
    splits: tuple[str, ...]
    seed: int
    out: Path


def _train_side_by_side(spec: WorldSpec, tokenizer_dir: Path, jobs: Sequence[_Job], progress: Progress | None) -> dict:
    """Train ``jobs`` (one CPU thread each) at once in worker processes; each job's report by name."""
    _say(progress, f"training {', '.join(j.name for j in jobs)}{' side by side' if len(jobs) > 1 else ''} ...")
    if len(jobs) == 1:
        job = jobs[0]
        reports = {job.name: _train_and_save(spec, tokenizer_dir, job.splits, job.seed, job.out)}
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(len(jobs), mp_context=context, initializer=quiet_libraries) as pool:
            futures = {j.name: pool.submit(_train_and_save, spec, tokenizer_dir, j.splits, j.seed, j.out) for j in jobs}
            reports = {name: future.result() for name, future in futures.items()}
    for name, report in reports.items():
        _say(progress, f"{name} trained in {report['seconds']:.0f} s")
    return reports


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
        target = self.root / retrain_name(seed)

        def build(tmp: Path) -> None:
            _train_side_by_side(self.spec, self.root / "tokenizer", [_retrain_job(seed, tmp)], progress)

        build_entry(target, build)
        return target

    @property
    def build_seconds(self) -> dict[str, float]:
        """Seconds spent on each part of the build (retrains included once built)."""
        seconds = dict(json.loads((self.root / "build.json").read_text())["seconds"])
        for path in sorted(self.root.glob("retrain-seed*/build.json")):
            seconds[path.parent.name] = json.loads(path.read_text())["seconds"]
        return seconds


def world_of(model_dir: str | os.PathLike | None) -> World | None:
    """The world whose original (or other model) lives in ``model_dir``, or None for any other directory."""
    if model_dir is None:
        return None
    root = Path(model_dir).resolve().parent
    try:
        spec = WorldSpec(**json.loads((root / "build.json").read_text(encoding="utf-8"))["spec"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return World(root, spec) if (root / MARKER).is_file() else None


def retrain_name(seed: int) -> str:
    return f"retrain-seed{seed}"


def _retrain_job(seed: int, out: Path) -> _Job:
    return _Job(retrain_name(seed), ("retain",), seed, out)


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _train_world(spec: WorldSpec, tmp: Path, extra: Sequence[int], progress: Progress | None) -> None:
    """Data, tokenizer, the original, the reference and the ``extra`` retrains, trained side by side into ``tmp``."""
    start = time.perf_counter()
    build_data_and_tokenizer(spec, tmp / "data", tmp / "tokenizer")
    seconds = {"data_and_tokenizer": round(time.perf_counter() - start, 2)}
    jobs = [
        _Job("original", ("forget", "retain"), spec.seed, tmp / "original"),
        _Job("reference", ("retain",), spec.seed, tmp / "reference"),
        *(_retrain_job(seed, tmp / retrain_name(seed)) for seed in extra),
    ]
    reports = _train_side_by_side(spec, tmp / "tokenizer", jobs, progress)
    for seed in extra:  # each retrain is a complete entry of its own
        (tmp / retrain_name(seed) / MARKER).write_text("complete\n")
    seconds.update({name: reports[name]["seconds"] for name in ("original", "reference")})
    seconds["total"] = round(time.perf_counter() - start, 2)
    params = reports["original"]["n_parameters"]
    _write_json(tmp / "build.json", {"spec": spec.to_dict(), "seconds": seconds, "n_parameters": params})
    _say(progress, f"world trained in {seconds['total']:.0f} s")


def build_world(
    spec: WorldSpec | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    retrains: Sequence[int] = (),
    from_scratch: bool = False,
) -> World:
    """The world for ``spec`` in the cache: reused when complete, else installed or built.

    The default world's models are shipped with the package (``auditor.world.shipped``)
    and copied into the cache; any other spec, or ``from_scratch``, trains from the
    recipe (a few minutes), ``from_scratch`` into an entry of its own
    (``world-<fingerprint>-trained``) so the shipped models stay the default.
    ``retrains`` names the seeds of exact retrains wanted as well (``World.retrain``);
    on a fresh build they train side by side with the original and the reference.
    """
    spec = spec or WorldSpec()
    name = f"world-{spec.fingerprint()[:12]}" + ("-trained" if from_scratch else "")
    root = cache_root(cache_dir) / name
    extra = sorted({seed for seed in retrains if seed != spec.seed})
    shipped = None if from_scratch else shipped_entry(spec.fingerprint())

    def build(tmp: Path) -> None:
        if shipped is not None:
            _say(progress, f"installing the shipped world models in {root}")
            install(shipped, tmp)
            return
        _say(progress, f"training the world in {root} (a few minutes, once) ...")
        _train_world(spec, tmp, extra, progress)

    if from_scratch and root.exists():
        shutil.rmtree(root)
    if not build_entry(root, build):
        _say(progress, f"reusing the embedded world in {root}")
    world = World(root, spec)
    if not all(world.file(name).is_file() for name in DATA_FILES):  # an entry made before a data file was added
        write_data(spec, make_persons(spec), world.data_dir)
    for seed in extra:
        world.retrain(seed, progress)
    return world
