"""No stale result: cached pieces and unlearned models are keyed by the code that computed them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from auditor.engine.orchestrator import Orchestrator
from auditor.engine.plan import make_plan
from auditor.engine.records import AuditConfig
from auditor.lm.models import fingerprint_dir
from auditor.types import ModelSpec
from probes.qa import QAProbe

PLUGIN = '''
"""A user's probe from outside the package: the qa probe under another name."""
from probes.qa import QAProbe


class EchoQA(QAProbe):
    """Exact-match QA, as the user wrote it first."""

    name = "echo-qa"
'''


def install_plugin(root, source: str) -> None:
    """``echo_plugin`` and a dist-info that registers its probe, on a folder the CLI gets on PYTHONPATH."""
    (root / "echo_plugin").mkdir(parents=True, exist_ok=True)
    (root / "echo_plugin" / "__init__.py").write_text(source)
    info = root / "echo_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[unlearn_audit.probes]\necho-qa = echo_plugin:EchoQA\n")


def pieces_of(folder) -> dict[str, tuple[str, int]]:
    """Piece file -> (its probe, its modification time)."""
    found = {}
    for path in (folder / "cache" / "pieces").glob("*.json"):
        if not path.name.startswith("attack-"):
            found[path.name] = (json.loads(path.read_text())["probe"], path.stat().st_mtime_ns)
    return found


def test_an_edited_probe_recomputes_its_cells_and_nothing_else(world, tmp_path):
    plugins = tmp_path / "plugins"
    install_plugin(plugins, PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])}
    sets = []
    for name in ("forget", "retain", "holdout"):  # 60 items of each: the pieces, not the figures, are at stake
        lines = world.file(name).read_text(encoding="utf-8").splitlines()[:60]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        sets += [f"--{name}", str(tmp_path / f"{name}.jsonl")]
    out = tmp_path / "out"
    audit = [
        sys.executable, "-m", "auditor", "audit", "--original", str(world.original), "--unlearned",
        str(world.original), *sets, "--preset", "quick", "--attack", "quant-rtn:bits=4",
        "--probe", "qa", "--probe", "echo-qa", "--out", str(out), "--resume",
    ]  # fmt: skip
    first = subprocess.run(audit, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode in (0, 1, 3), first.stderr
    before = pieces_of(out)
    assert {probe for probe, _ in before.values()} == {"qa", "echo-qa"}

    edited = PLUGIN.replace("as the user wrote it first", "after the user's edit")
    install_plugin(plugins, textwrap.dedent(edited))
    second = subprocess.run(audit, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == first.returncode, second.stderr
    after = pieces_of(out)
    kept = {name for name in before if after[name][1] == before[name][1]}
    assert kept == set(before), "a finished piece was rewritten"
    added = [probe for name, (probe, _) in after.items() if name not in before]
    echo_pieces = sum(probe == "echo-qa" for probe, _ in before.values())
    assert added == ["echo-qa"] * echo_pieces, "the edited probe's pieces, and only those, are recomputed"


def test_an_unlearned_model_is_current_only_for_its_own_recipe(world, data, tmp_path, monkeypatch):
    from auditor.campaign import unlearn_runner
    from auditor.campaign.unlearn_runner import is_current, recipe_key, unlearn_to_dir
    from auditor.lm.models import load_model
    from auditor.lm.prompts import PromptFormat
    from auditor.plugins import RunContext
    from auditor.registry import METHODS
    from auditor.types import ItemSet, ModelSpec

    forget, retain = (ItemSet(s.name, s.kind, s.items[:8], s.source, f"{s.name}-8") for s in (data.forget, data.retain))
    texts = data.forget_texts
    original = load_model(ModelSpec(str(world.original)))
    method, out, prompts = METHODS.get("noop")(), tmp_path / "noop", PromptFormat()
    unlearn_to_dir(method, original, forget, retain, out, RunContext(data=data, seed=0, prompts=prompts))
    inputs = {"forget": forget, "retain": retain, "forget_texts": texts}

    def current(inputs=inputs, seed=0, prompts=prompts) -> bool:
        return is_current(out, recipe_key(method, original.fingerprint, inputs, seed, prompts))

    assert texts is not None and current()
    assert not current(seed=1)
    assert not current({**inputs, "forget": data.forget})
    fewer_texts = ItemSet(texts.name, texts.kind, texts.items[:1], texts.source, "one text")
    assert not current({**inputs, "forget_texts": fewer_texts})  # methods train on the forget texts too
    assert not current({"forget": forget, "retain": retain})
    assert not current(prompts=PromptFormat(template="Q: {question}\nA:"))
    monkeypatch.setattr(unlearn_runner, "code_digest", lambda cls: "edited")
    assert not current()


def test_a_copy_saved_by_another_transformers_release_is_the_same_model(world, tmp_path):
    """The fingerprint (every cache key's model part) ignores who saved a config, not what it sets: the demo's
    noop copy, saved by the installed transformers, reuses the original's audit pieces."""

    def copy_with(name: str, **changes) -> Path:
        target = tmp_path / name
        shutil.copytree(world.original, target)
        config = json.loads((target / "config.json").read_text())
        (target / "config.json").write_text(json.dumps({**config, **changes}, indent=1))
        return target

    original = fingerprint_dir(world.original)
    assert fingerprint_dir(copy_with("resaved", transformers_version="0.0.0-other")) == original
    assert fingerprint_dir(copy_with("changed", rms_norm_eps=1e-3)) != original


def test_pieces_and_attacks_of_another_dtype_are_other_cache_entries(world, data, tmp_path):
    """The same weights in bfloat16 give other figures: a --resume in another dtype reuses nothing."""
    plan = make_plan("quick", (), (), 0, data=data)

    def key(dtype: str) -> str:
        spec = ModelSpec(str(world.original), dtype=dtype)
        orchestrator = Orchestrator(AuditConfig(spec, spec, None, plan, cache_dir=tmp_path), data)
        return orchestrator._piece_key(fingerprint_dir(world.original), "none", None, QAProbe(), data)

    assert key("float32") == key("auto") != key("bfloat16")  # auto is float32 on a CPU
