"""Shared fixtures: the embedded world, its data and known-answer controls, and the one factory of random tiny
Llama models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from auditor.campaign.demo import WORLD_AUDIT_FILES, world_data
from auditor.campaign.unlearn_runner import unlearn_to_dir
from auditor.engine.audit import run_audit
from auditor.engine.plan import DEMO_PRESET, make_plan
from auditor.engine.records import AuditConfig
from auditor.lm.models import load_model
from auditor.plugins import RunContext
from auditor.registry import METHODS
from auditor.stats.policy import Policy
from auditor.types import ModelSpec
from auditor.world import World, build_world

TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}


def tiny_llama(tokenizer, seed: int = 0, **config) -> LlamaForCausalLM:
    """A random tiny Llama over ``tokenizer``'s vocabulary and special tokens; ``config`` overrides its fields."""
    fields = {**TINY_LLAMA, **config}
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(seed)
    return LlamaForCausalLM(
        LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **special, **fields)
    )


@pytest.fixture(scope="session")
def make_tiny_llama():
    """``tiny_llama``, for module-scoped fixtures."""
    return tiny_llama


@pytest.fixture(scope="session")
def world() -> World:
    """The default embedded world and its seed-1 retrain, built once into ``$UNLEARN_AUDIT_CACHE`` and reused."""
    return build_world(progress=print, retrains=(1,))


def pytest_collection_modifyitems(items):
    """A test that uses the embedded world (directly or through a fixture) is slow: ``make test-fast`` skips it."""
    for item in items:
        if "world" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def data(world):
    """The world's audit data, as the demo reads it."""
    return world_data(world)


class Controls(dict):
    """The known-answer controls, each unlearned once per session when first asked for."""

    def __init__(self, world, data, root: Path):
        super().__init__()
        self.world, self.data, self.root = world, data, root

    def __missing__(self, name: str) -> Path:
        original = load_model(ModelSpec(str(self.world.original)))
        ctx = RunContext(data=self.data)
        unlearn_to_dir(METHODS.get(name)(), original, self.data.forget, self.data.retain, self.root / name, ctx)
        self[name] = self.root / name
        return self[name]


@pytest.fixture(scope="session")
def controls(world, data, tmp_path_factory):
    """Control name -> its model directory, unlearned from the world's original when first asked for."""
    return Controls(world, data, tmp_path_factory.mktemp("controls"))


def audit_world(world, data, unlearned: Path, out: Path, cache: Path, preset: str = DEMO_PRESET, **kw) -> dict:
    """results.json of an audit of ``unlearned`` against the world's original and (unless ``controlled=False``)
    reference; ``attacks``, ``probes`` and ``budget`` change the preset's plan. Pieces are reused from ``cache``."""
    config = AuditConfig(
        ModelSpec(str(world.original)),
        ModelSpec(str(unlearned)),
        ModelSpec(str(world.reference)) if kw.pop("controlled", True) else None,
        make_plan(preset, kw.pop("attacks", ()), kw.pop("probes", ()), 0, budget=kw.pop("budget", None), data=data),
        cache_dir=cache,
    )
    return run_audit(config, data, Policy(), out, command="test", options={"preset": preset}, resume=True).results


def world_data_args(world) -> list[str]:
    """The CLI options that read the same files as the ``data`` fixture."""
    return [
        arg for opt, name in WORLD_AUDIT_FILES.items() for arg in (f"--{opt.replace('_', '-')}", str(world.file(name)))
    ]


def show_cells(results) -> str:
    """The verdict and every cell, one per line: what an assertion about an audit prints when it fails."""
    rows = [
        f"{c['attack']:24s} {c['probe']:20s} {c['residual']} [{c['ci_low']}, {c['ci_high']}] {c['outcome']} "
        f"{c['note'] or ''}"
        for c in results["cells"]
    ]
    return results["verdict"]["label"] + "\n" + "\n".join(rows)
