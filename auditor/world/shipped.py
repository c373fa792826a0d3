"""The default world's trained models, shipped in the package so every machine audits the same weights.

Training the recipe on another CPU gives other float round-off, and after
1,500 steps other weights: the reference's forget accuracy moved from 0.079 to
0.067 between two machines of one kind, and method verdicts with it. So the
default world's entry (data files, tokenizer, original, reference and the
seed-1 retrain) is trained once and shipped under ``auditor/world/shipped``
with ``manifest.json``: the recipe fingerprint it was trained from, and what
each model knows (greedy accuracy per split). ``build_world`` copies it into
the cache instead of training; ``unlearn-audit world build --rebuild`` still
trains from scratch and compares knowledge with the shipped models, and
``--ship`` replaces them (after a recipe change).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from auditor.world.cache import MARKER

SHIPPED_DIR = Path(__file__).parent / "shipped"
MANIFEST = "manifest.json"
REBUILD_COMMAND = "unlearn-audit world build --rebuild --ship"
SHIPPED_RETRAINS = (1,)  # retrain seeds shipped beside the original and the reference
SPLITS = ("forget", "retain", "holdout")


def read_manifest(directory: Path | None = None) -> dict | None:
    """The shipped entry's manifest (in ``directory``, default ``SHIPPED_DIR``), or None when nothing is shipped."""
    path = (directory or SHIPPED_DIR) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def shipped_entry(fingerprint: str, directory: Path | None = None) -> Path | None:
    """The shipped entry when it was trained from the recipe with this fingerprint, else None."""
    manifest = read_manifest(directory)
    if manifest is None or manifest["fingerprint"] != fingerprint:
        return None
    return (directory or SHIPPED_DIR) / "entry"


def install(entry: Path, target: Path) -> None:
    """Copy a shipped entry into a cache directory being built; each shipped retrain is complete."""
    shutil.copytree(entry, target, dirs_exist_ok=True)
    for retrain in target.glob("retrain-seed*"):
        (retrain / MARKER).write_text("complete\n")


def knowledge(world) -> dict[str, dict[str, float]]:
    """Greedy QA accuracy of each model of ``world`` on each split (what a rebuild is compared on)."""
    from auditor.data import load_items
    from auditor.lm.knowledge import qa_accuracy
    from auditor.lm.models import ModelSpec, load_model

    models = {"original": world.original, "reference": world.reference}
    models |= {path.name: path for path in sorted(world.root.glob("retrain-seed*")) if (path / MARKER).is_file()}
    sets = {split: load_items(world.file(split), split) for split in SPLITS}
    out = {}
    for name, path in models.items():
        loaded = load_model(ModelSpec(str(path)))
        out[name] = {split: round(qa_accuracy(loaded, items), 4) for split, items in sets.items()}
    return out


def ship(world, known: dict | None = None, directory: Path | None = None) -> dict:
    """Replace the shipped entry with ``world``'s models and data; return the new manifest.

    ``known`` is ``knowledge(world)`` when already measured.
    """
    directory = directory or SHIPPED_DIR
    manifest = {
        "fingerprint": world.spec.fingerprint(),
        "spec": world.spec.to_dict(),
        "knowledge": known or knowledge(world),
        "rebuild": REBUILD_COMMAND,
    }
    staging = directory.with_name(directory.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    parts = ["data", "tokenizer", "original", "reference", "build.json"]
    parts += [f"retrain-seed{seed}" for seed in SHIPPED_RETRAINS]
    for part in parts:
        source = world.root / part
        if source.is_dir():
            shutil.copytree(source, staging / "entry" / part, ignore=shutil.ignore_patterns(MARKER))
        else:
            (staging / "entry").mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, staging / "entry" / part)
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return manifest


def comparison_table(shipped: dict[str, dict[str, float]], rebuilt: dict[str, dict[str, float]]) -> str:
    """Accuracy per model and split, shipped beside rebuilt, as aligned text."""
    lines = [f"{'model':16s} {'split':8s} {'shipped':>8s} {'rebuilt':>8s} {'change':>7s}"]
    for name in rebuilt:
        for split in SPLITS:
            new = rebuilt[name][split]
            old = shipped.get(name, {}).get(split)
            old_text, change = ("n/a", "") if old is None else (f"{old:.3f}", f"{new - old:+.3f}")
            lines.append(f"{name:16s} {split:8s} {old_text:>8s} {new:8.3f} {change:>7s}")
    return "\n".join(lines)
