"""Attacks: the RTN grid against an independent computation, backends that cannot run, relearning folds,
the runner's cache, and the attacks' effect on the embedded world's models and controls."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import torch

import attacks.quantization as quantization
from attacks.common import item_examples, subject_folds
from attacks.gptq import QuantGPTQ
from attacks.quantization import QuantBnB, QuantRTN
from attacks.relearning import RelearnForget, RelearnRetain, RelearnUnrelated, activation_bytes
from auditor.data import load_items
from auditor.engine.attack_runner import run_attack
from auditor.errors import UserError
from auditor.lm.adapters import adapter_bytes, variant_fingerprint
from auditor.lm.models import clone, fingerprint_module, load_model
from auditor.lm.quant import RTNLinear, quantizable_linears, rtn_bin_bounds, rtn_quantize_dequantize
from auditor.lm.routing import RoutedScoringModel
from auditor.lm.scoring import ScoringModel
from auditor.plugins import ATTACK_TIERS, Attack, AttackOutcome, RunContext
from auditor.registry import ATTACKS
from auditor.stats.metrics import contains_answer
from auditor.types import AuditData, Item, ItemSet, ModelSpec
from auditor.world.tokenizer import train_tokenizer

torch.set_num_threads(2)

# --------------------------------------------------------------------------- RTN grid


def _reference_rtn(weight: torch.Tensor, bits: int, group_size: int, symmetric: bool):
    """Dequantized weights, step size and the group's range per weight, group by group in Python loops."""
    rows, cols = weight.shape
    g = cols if group_size <= 0 else min(group_size, cols)
    out, step = torch.empty_like(weight), torch.empty_like(weight)
    span = torch.empty((2, rows, cols))
    for r in range(rows):
        for start in range(0, cols, g):
            w = weight[r, start : start + g]
            if symmetric:
                qmax = 2 ** (bits - 1) - 1
                scale = float(w.abs().max()) / qmax or 1.0
                q = torch.clamp(torch.round(w / scale), -qmax, qmax)
                out[r, start : start + g] = q * scale
                span[:, r, start : start + g] = torch.tensor([-1.0, 1.0]).unsqueeze(1) * float(w.abs().max())
            else:
                lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
                scale = (hi - lo) / (2**bits - 1) or 1.0
                zero = round(-lo / scale)
                q = torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)
                out[r, start : start + g] = (q - zero) * scale
                span[:, r, start : start + g] = torch.tensor([lo, hi]).unsqueeze(1)
            step[r, start : start + g] = scale
    return out, step, span


GRIDS = [(bits, group, sym) for bits in (3, 4, 8) for group in (0, 32, 48, 256) for sym in (True, False)]


@pytest.mark.parametrize(("bits", "group_size", "symmetric"), GRIDS)
def test_rtn_error_within_half_step(bits, group_size, symmetric):
    torch.manual_seed(bits * 1000 + group_size)
    weight = torch.randn(12, 200) * torch.rand(12, 1)  # rows of different scales; 200 % 48 != 0
    weight[0] = weight[0].abs()  # an all-positive row: the asymmetric range must still hold zero
    deq = rtn_quantize_dequantize(weight, bits, group_size, symmetric)
    expected, step, _ = _reference_rtn(weight, bits, group_size, symmetric)
    assert deq.shape == weight.shape and deq.dtype == weight.dtype
    assert torch.allclose(deq, expected, atol=1e-6)
    assert ((deq - weight).abs() <= step / 2 + 1e-6).all()
    assert len(torch.unique(deq[3, :32])) <= 2**bits


@pytest.mark.parametrize(("bits", "group_size", "symmetric"), GRIDS)
def test_rtn_bin_bounds_keep_the_level(bits, group_size, symmetric):
    torch.manual_seed(7 + bits)
    weight = torch.randn(12, 200)
    low, high = rtn_bin_bounds(weight, bits, group_size, symmetric)
    deq = rtn_quantize_dequantize(weight, bits, group_size, symmetric)
    _, step, span = _reference_rtn(weight, bits, group_size, symmetric)
    assert (low <= weight).all() and (weight <= high).all()
    assert (span[0] <= low).all() and (high <= span[1]).all()  # no weight may move the grid's range
    if symmetric:  # the grid spans the range exactly, so every level's value lies in its bin
        assert ((low - 1e-6 * span[1] <= deq) & (deq <= high + 1e-6 * span[1])).all()
    else:  # an integer zero point can put the end levels (and the pinned min/max) off their exact value
        checked = (deq >= span[0]) & (deq <= span[1]) & (high > low)
        assert ((low <= deq) & (deq <= high) | ~checked).all() and checked.float().mean() > 0.8
    assert (high - low <= step + 1e-6).all()
    for trial in range(3):  # any values inside the bounds quantize to the same grid and levels
        torch.manual_seed(trial)
        moved = low + (high - low) * torch.rand_like(weight)
        assert torch.equal(rtn_quantize_dequantize(moved, bits, group_size, symmetric), deq)
    moved = weight.clone()
    moved[0, 0] = high[0, 0] + step[0, 0]  # leaving the bin changes the result
    assert not torch.equal(rtn_quantize_dequantize(moved, bits, group_size, symmetric), deq)


# --------------------------------------------------------------------------- a tiny model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_tiny_llama):
    """A random tiny Llama saved to disk, loaded, and small forget/retain sets with subjects."""
    names = [f"Person {chr(65 + i)}" for i in range(8)]
    forget = tuple(
        Item(id=f"f{i}-{r}", question=f"What is the {r} of {n}?", answer=f"{r}{i}", group=n)
        for i, n in enumerate(names[:4])
        for r in ("city", "job")
    )
    retain = tuple(
        Item(id=f"r{i}", question=f"What is the city of {n}?", answer=f"city{i}", group=n)
        for i, n in enumerate(names[4:])
    )
    texts = [f"Question: {it.question}\nAnswer: {it.answer}" for it in forget + retain]
    tokenizer = train_tokenizer(texts * 3, 300)
    model = make_tiny_llama(tokenizer, max_position_embeddings=64, tie_word_embeddings=True)
    directory = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    loaded = load_model(ModelSpec(str(directory), dtype="float32", device="cpu"))
    data = AuditData(ItemSet("forget", "qa", forget, "memory", "f"), ItemSet("retain", "qa", retain, "memory", "r"))
    ctx = RunContext(data, seed=0, work_dir=tmp_path_factory.mktemp("work"))
    return loaded, ctx


def _dir_digest(path: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(Path(path).iterdir()) if f.is_file()}


def test_registered_attacks_have_metadata():
    assert set(ATTACKS.names()) >= {"quant-rtn", "quant-bnb", "quant-gptq", "relearn-forget", "relearn-retain"}
    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        assert issubclass(cls, Attack) and cls.name == name and cls.summary and cls.paper
        assert cls.tier in ATTACK_TIERS
        cls()  # the defaults pass validation
    assert Attack.reloadable and not QuantGPTQ.reloadable  # declared, as the runner reads it for its cache
    with pytest.raises(TypeError, match="tier must be one of"):
        type("Grey", (Attack,), {"tier": "grey-box"})


def test_quantizable_linears_are_the_decoder_projections(tiny):
    loaded, _ = tiny
    names = [name for name, _ in quantizable_linears(loaded.model)]
    assert len(names) == 2 * 7 and all(name.startswith("model.layers.") for name in names)
    assert "lm_head" not in names


def test_rtn_attack_quantizes_a_copy(tiny):
    loaded, ctx = tiny
    before = fingerprint_module(loaded.model)
    out = QuantRTN(bits=4, group_size=32).apply(loaded, ctx)
    assert out.result.status == "ok" and out.result.input_fingerprint == loaded.fingerprint
    assert fingerprint_module(loaded.model) == before  # the input model is untouched
    applied = out.result.applied
    assert applied["modules"] == 14 and applied["bits"] == 4 and applied["scheme"] == "symmetric"
    model = out.variants[0].model.model
    for name, linear in quantizable_linears(model):
        original = dict(loaded.model.named_modules())[name].weight
        assert torch.equal(linear.weight, rtn_quantize_dequantize(original, 4, 32, True))
    assert torch.equal(model.model.embed_tokens.weight, loaded.model.model.embed_tokens.weight)
    assert out.result.variants[0].fingerprint == fingerprint_module(model) != before
    quantized = sum(linear.weight.untyped_storage().nbytes() for _, linear in quantizable_linears(model))
    held = _storage_bytes([loaded.model, model])
    assert held == _storage_bytes([loaded.model]) + quantized  # embeddings, norms and head stay the input's


@pytest.mark.parametrize(("bits", "group_size", "symmetric"), GRIDS)
def test_rtn_linear_rebuilds_the_dequantized_weight_bit_for_bit(bits, group_size, symmetric):
    torch.manual_seed(bits + group_size)
    linear = torch.nn.Linear(200, 12)
    compact = RTNLinear(linear, bits, group_size, symmetric)
    assert torch.equal(compact.weight, rtn_quantize_dequantize(linear.weight, bits, group_size, symmetric))
    assert compact.levels.element_size() <= 2 and compact.bias is linear.bias
    x = torch.randn(3, 200)
    assert torch.equal(compact(x), torch.nn.functional.linear(x, compact.weight, linear.bias))


def test_compact_rtn_gives_the_dense_model_in_less_memory(tiny, tmp_path):
    loaded, ctx = tiny
    dense = QuantRTN(bits=4, group_size=32, storage="dense").apply(loaded, ctx).variants[0].model
    out = QuantRTN(bits=4, group_size=32, storage="compact").apply(loaded, ctx)
    compact = out.variants[0].model
    assert out.result.applied["storage"].startswith("compact") and out.result.applied["modules"] == 14
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    with torch.no_grad():
        assert torch.equal(compact.model(input_ids=ids).logits, dense.model(input_ids=ids).logits)
    base = _storage_bytes([loaded.model])
    assert (
        _storage_bytes([loaded.model, compact.model]) - base < (_storage_bytes([loaded.model, dense.model]) - base) / 2
    )
    assert isinstance(dict(compact.model.named_modules())["model.layers.0.mlp.up_proj"], RTNLinear)
    saved = tmp_path / "kept"
    run_attack(QuantRTN(bits=4, group_size=32, storage="compact"), loaded, ctx, None, saved)
    reloaded = load_model(ModelSpec(str(saved / "main")))  # saved with float weights: a plain model again
    with torch.no_grad():
        assert torch.equal(reloaded.model(input_ids=ids).logits, dense.model(input_ids=ids).logits)


def test_rtn_storage_follows_the_free_memory(tiny, monkeypatch):
    """Dense (fast) where the copy leaves room, compact where the memory the rule may count on is short."""
    loaded, ctx = tiny
    assert QuantRTN().apply(loaded, ctx).result.applied["storage"].startswith("dense")
    monkeypatch.setenv("UNLEARN_AUDIT_MEMORY_BUDGET", "1K")  # as on a machine whose memory the models fill
    assert QuantRTN().apply(loaded, ctx).result.applied["storage"].startswith("compact")
    monkeypatch.setenv("UNLEARN_AUDIT_MEMORY_BUDGET", "lots")
    with pytest.raises(UserError, match="MEMORY_BUDGET"):
        QuantRTN().apply(loaded, ctx)
    with pytest.raises(UserError, match="storage must be one of"):
        QuantRTN(storage="sparse")


def _bnb_types():
    import bitsandbytes as bnb

    return {"nf4": bnb.nn.Linear4bit, "fp4": bnb.nn.Linear4bit, "int8": bnb.nn.Linear8bitLt}


def _bnb_kernels_run(mode: str) -> bool:
    """Whether bitsandbytes quantizes a CPU tensor here in ``mode`` (then the attack has no reason to skip)."""
    try:
        import bitsandbytes as bnb

        if mode == "int8":
            bnb.functional.int8_vectorwise_quant(torch.randn(64, 64).half())
        else:
            bnb.functional.quantize_4bit(torch.randn(64, 64), quant_type=mode)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_bnb_really_quantizes_or_says_why(tiny, mode):
    loaded, ctx = tiny
    before = fingerprint_module(loaded.model)
    out = QuantBnB(mode=mode).apply(loaded, ctx)
    assert fingerprint_module(loaded.model) == before  # built from the input's own tensors, which stay as they were
    if out.result.status == "skipped":
        assert out.result.reason and not out.variants
        assert not _bnb_kernels_run(mode), f"bitsandbytes runs here, yet the attack was skipped: {out.result.reason}"
        warnings.warn(f"quant-bnb {mode} skipped on this machine, as it said: {out.result.reason}", stacklevel=1)
        return
    model = out.variants[0].model.model
    kind = _bnb_types()[mode]
    layers = [name for name, module in model.named_modules() if isinstance(module, kind)]
    assert len(layers) == out.result.applied["quantized_modules"] == 14
    ids = torch.tensor([[loaded.tokenizer.bos_token_id, 5, 6, 7]])
    with torch.no_grad():
        diff = (model(ids).logits - loaded.model(ids).logits).abs().max().item()
    assert 0 < diff < 1.0  # it runs, close to the original but not equal
    assert not list(ctx.work_dir.iterdir())  # nothing written to disk


def test_bnb_missing_import_is_skipped(tiny, monkeypatch):
    loaded, ctx = tiny
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # "import bitsandbytes" now fails
    out = QuantBnB().apply(loaded, ctx)
    assert out.result.status == "skipped" and "bitsandbytes" in out.result.reason and not out.variants


def test_bnb_full_precision_load_is_never_labelled_quantized(tiny, monkeypatch):
    loaded, ctx = tiny
    monkeypatch.setattr(quantization, "_quantized_copy", lambda loaded, config: clone(loaded))  # config ignored
    out = QuantBnB().apply(loaded, ctx)
    assert out.result.status == "skipped" and "not quantized" in out.result.reason and not out.variants


def test_gptq_skipped_without_the_extra(tiny, monkeypatch):
    loaded, ctx = tiny
    monkeypatch.setitem(sys.modules, "gptqmodel", None)
    out = QuantGPTQ().apply(loaded, ctx)
    assert out.result.status == "skipped" and "gptqmodel" in out.result.reason and not out.variants


@pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is None, reason="the gptq extra is not installed")
def test_gptq_quantizes_when_installed(tiny):
    loaded, ctx = tiny
    out = QuantGPTQ(calibration_items=8).apply(loaded, ctx)
    assert out.result.status == "ok", out.result.reason
    assert out.result.applied["quantized_modules"] == 14 and out.result.applied["group_size"] == 64
    assert not (Path.cwd() / "logs").exists() or not list((Path.cwd() / "logs").glob("gptq_log_*"))


def test_relearn_forget_folds_hold_out_whole_subjects(tiny):
    loaded, ctx = tiny
    attack = RelearnForget(steps=2)
    items, n_folds = ctx.data.forget.items, attack.params["folds"]
    folds = subject_folds(items, n_folds, seed=0)  # the folds the attack trains and holds out
    keys = {item.key for item in items}
    assert sorted(k for fold in folds for k in fold) == sorted(keys) and all(folds)
    assert folds == subject_folds(items, n_folds, seed=0) != subject_folds(items, n_folds, seed=5)
    out = attack.apply(loaded, ctx)
    assert out.result.status == "ok" and len(out.variants) == 2
    for variant, fold, record in zip(out.variants, folds, out.result.applied["folds"], strict=True):
        assert variant.trained_groups == keys - set(fold)
        trained = {item.id for item in ctx.data.forget.items if item.key not in fold}
        assert set(record["trained_items"]) == trained and record["held_out_groups"] == fold
    routed = RoutedScoringModel([(ScoringModel(v.model), v.trained_groups) for v in out.variants])
    items = ctx.data.forget.items
    answers = routed.generate([ctx.prompts.prompt(it.question) for it in items], 4, groups=[it.key for it in items])
    assert all(a is not None for a in answers)  # every item has a model that never saw its subject
    assert out.result.cost["steps"] == 4


def test_relearn_retain_and_unrelated(tiny):
    loaded, ctx = tiny
    out = RelearnRetain(steps=2, mode="full").apply(loaded, ctx)
    assert out.result.status == "ok" and out.result.applied["mode"] == "full"
    assert out.variants[0].trained_groups == {it.group for it in ctx.data.retain.items}
    missing = RelearnUnrelated(steps=2).apply(loaded, ctx)
    assert missing.result.status == "skipped" and "unrelated" in missing.result.reason


def test_runner_caches_and_never_writes_the_input(tiny, tmp_path, monkeypatch):
    loaded, ctx = tiny
    source_before = _dir_digest(Path(loaded.spec.path))
    attack = RelearnForget(steps=3)
    first = run_attack(attack, loaded, ctx, tmp_path)
    entries = [p for p in tmp_path.iterdir()]
    assert len(entries) == 1 and (entries[0] / "result.json").is_file()

    def no_recompute(self, loaded, ctx) -> AttackOutcome:
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(RelearnForget, "apply", no_recompute)
    second = run_attack(attack, loaded, ctx, tmp_path)
    assert second.result == first.result
    assert [v.model.fingerprint for v in second.variants] == [v.model.fingerprint for v in first.variants]
    stored = [r.fingerprint for r in first.result.variants]
    assert [variant_fingerprint(loaded.fingerprint, v.model.model, v.adapter) for v in second.variants] == stored
    assert [v.trained_groups for v in second.variants] == [v.trained_groups for v in first.variants]
    with pytest.raises(AssertionError):  # another seed is another entry
        run_attack(attack, loaded, RunContext(ctx.data, seed=1, work_dir=ctx.work_dir), tmp_path)
    monkeypatch.setitem(sys.modules, "gptqmodel", None)
    skipped = run_attack(QuantGPTQ(), loaded, ctx, tmp_path)
    monkeypatch.setattr(QuantGPTQ, "apply", no_recompute)
    assert run_attack(QuantGPTQ(), loaded, ctx, tmp_path).result == skipped.result
    assert _dir_digest(Path(loaded.spec.path)) == source_before


def test_runner_recomputes_a_damaged_entry(tiny, tmp_path):
    loaded, ctx = tiny
    attack = RelearnRetain(steps=2)
    first = run_attack(attack, loaded, ctx, tmp_path)
    (entry,) = tmp_path.iterdir()
    (entry / "variants" / "main" / "adapter_model.safetensors").write_bytes(b"broken")
    again = run_attack(attack, loaded, ctx, tmp_path)
    assert not again.reused and again.result.variants == first.result.variants
    reloaded = run_attack(attack, loaded, ctx, tmp_path)
    (variant,) = reloaded.variants
    assert reloaded.reused and variant.model.fingerprint == first.result.variants[0].fingerprint
    assert variant_fingerprint(loaded.fingerprint, variant.model.model, variant.adapter) == variant.model.fingerprint
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]  # replaced in place, no staging left


def _storage_bytes(modules) -> int:
    """Bytes of the distinct tensor storages that ``modules`` hold (shared tensors counted once)."""
    storages = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def test_relearning_variants_are_adapters_on_the_input_weights(tiny, tmp_path, monkeypatch):
    loaded, ctx = tiny
    roomy = RelearnForget(steps=2).apply(loaded, ctx).variants[0].model.model  # with room: served merged
    assert not any("lora" in name for name, _ in roomy.named_modules())
    monkeypatch.setenv("UNLEARN_AUDIT_MEMORY_BUDGET", "1K")  # as on a machine whose memory the models fill
    before = fingerprint_module(loaded.model)
    out = RelearnForget(steps=2).apply(loaded, ctx)
    base = _storage_bytes([loaded.model])
    adapters = sum(adapter_bytes(v.adapter) for v in out.variants)
    held = _storage_bytes([loaded.model, *(v.model.model for v in out.variants)])
    assert 0 < adapters < base and held == base + adapters  # one base and two adapters: never two copies
    assert fingerprint_module(loaded.model) == before  # the input is untouched: nothing injected, nothing merged
    assert not any("lora" in name for name, _ in loaded.model.named_modules())
    plain = ScoringModel(loaded).generate([ctx.prompts.prompt(ctx.data.forget.items[0].question)], 4)
    assert plain == ScoringModel(load_model(loaded.spec)).generate(
        [ctx.prompts.prompt(ctx.data.forget.items[0].question)], 4
    )


def test_the_cache_holds_adapters_and_records_never_model_weights(tiny, tmp_path):
    loaded, ctx = tiny
    keep = tmp_path / "kept"
    for attack in (RelearnRetain(steps=2), QuantRTN(bits=4)):
        run_attack(attack, loaded, ctx, tmp_path / "cache", keep / attack.name)
    stored = [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the RTN copy is rebuilt when needed, not stored
    assert sum(f.stat().st_size for f in stored) < _storage_bytes([loaded.model]) / 4
    assert {f.name for f in stored} == {"result.json", "adapter_model.safetensors", "adapter_config.json"}
    assert (keep / "relearn-retain" / "main" / "adapter_config.json").is_file()
    assert (keep / "quant-rtn" / "main" / "model.safetensors").is_file()
    adapter = load_model(ModelSpec(loaded.spec.path, adapter=str(keep / "relearn-retain" / "main")))
    assert fingerprint_module(adapter.model) != fingerprint_module(loaded.model)  # the kept adapter loads on its base


# --------------------------------------------------------------------------- the embedded world


def _accuracy(lm, items: tuple[Item, ...], ctx: RunContext) -> float:
    """Share of items whose greedy answer contains the true answer (items no model may see are left out)."""
    outputs = lm.generate([ctx.prompts.prompt(it.question) for it in items], groups=[it.key for it in items])
    hits = [contains_answer(out, it.answer) for out, it in zip(outputs, items, strict=True) if out is not None]
    assert len(hits) == len(items)
    return sum(hits) / len(hits)


def _routed(outcome: AttackOutcome) -> RoutedScoringModel:
    return RoutedScoringModel([(ScoringModel(v.model), v.trained_groups) for v in outcome.variants])


@pytest.fixture(scope="module")
def world_setup(world, tmp_path_factory):
    """The world's original and reference models, and a context on its data."""
    original = load_model(ModelSpec(str(world.original), dtype="float32", device="cpu"))
    reference = load_model(ModelSpec(str(world.reference), dtype="float32", device="cpu"))
    data = AuditData(
        forget=load_items(world.file("forget"), "forget"),
        retain=load_items(world.file("retain"), "retain"),
        unrelated=load_items(world.file("unrelated"), "unrelated", kind="text"),
    )
    ctx = RunContext(data, seed=0, work_dir=tmp_path_factory.mktemp("world-work"))
    return original, reference, ctx


@pytest.fixture(scope="module")
def control_models(controls):
    """The ``idk`` and ``quant-hide`` controls (shared with the audit tests), loaded."""
    return {
        name: load_model(ModelSpec(str(controls[name]), dtype="float32", device="cpu"))
        for name in ("idk", "quant-hide")
    }


@pytest.mark.slow
def test_rtn_bits_order_the_logit_change(world_setup):
    original, _, ctx = world_setup
    items = ctx.data.forget.items[:64]
    pairs = [(ctx.prompts.prompt(it.question), ctx.prompts.completion(it.answer)) for it in items]
    base = ScoringModel(original).token_stats(pairs)

    def change(bits: int) -> float:
        quantized = QuantRTN(bits=bits).apply(original, ctx).variants[0].model
        stats = ScoringModel(quantized).token_stats(pairs)
        return sum(float(abs(a.logprobs - b.logprobs).mean()) for a, b in zip(stats, base, strict=True))

    eight, four, three = change(8), change(4), change(3)
    assert 0 < eight < four < three


@pytest.mark.slow
def test_relearn_forget_on_world(world_setup, control_models):
    original, reference, ctx = world_setup
    items = ctx.data.forget.items
    attack = RelearnForget()
    acc_original = _accuracy(ScoringModel(original), items, ctx)
    acc_reference = _accuracy(ScoringModel(reference), items, ctx)
    attacked_reference = _accuracy(_routed(attack.apply(reference, ctx)), items, ctx)
    acc_idk = _accuracy(ScoringModel(control_models["idk"]), items, ctx)
    attacked_idk = _accuracy(_routed(attack.apply(control_models["idk"], ctx)), items, ctx)
    print(
        f"relearn-forget: O {acc_original:.2f}, Ref {acc_reference:.2f} -> {attacked_reference:.2f}, "
        f"idk {acc_idk:.2f} -> {attacked_idk:.2f}"
    )
    assert acc_original > 0.8 and acc_idk < 0.2  # the setting the claims below need
    assert abs(attacked_reference - acc_reference) <= 0.10  # retraining on other subjects teaches nothing new
    assert attacked_idk >= 0.5 * acc_original  # what the refusal hid comes back


@pytest.mark.slow
def test_quant_rtn_on_world(world_setup, control_models):
    original, reference, ctx = world_setup
    items = ctx.data.forget.items
    attack = QuantRTN(bits=4)
    acc_original = _accuracy(ScoringModel(original), items, ctx)
    acc_hide = _accuracy(ScoringModel(control_models["quant-hide"]), items, ctx)
    attacked_hide = _accuracy(
        ScoringModel(attack.apply(control_models["quant-hide"], ctx).variants[0].model), items, ctx
    )
    acc_reference = _accuracy(ScoringModel(reference), items, ctx)
    attacked_reference = _accuracy(ScoringModel(attack.apply(reference, ctx).variants[0].model), items, ctx)
    print(
        f"quant-rtn 4-bit: O {acc_original:.2f}, quant-hide {acc_hide:.2f} -> {attacked_hide:.2f}, "
        f"Ref {acc_reference:.2f} -> {attacked_reference:.2f}"
    )
    assert acc_hide < 0.5 * acc_original  # the control forgot for the plain model
    assert attacked_hide >= 0.8 * acc_original
    assert abs(attacked_reference - acc_reference) <= 0.05


@pytest.mark.slow
def test_runner_on_world_reuses_and_keeps_inputs(world, world_setup, tmp_path, monkeypatch):
    original, _, ctx = world_setup
    before = _dir_digest(world.original)
    attacks = (QuantRTN(bits=4), QuantBnB(mode="nf4"), RelearnRetain(steps=5))
    first = [run_attack(attack, original, ctx, tmp_path) for attack in attacks]
    monkeypatch.setattr(RelearnRetain, "apply", lambda *args: pytest.fail("recomputed a cached attack"))
    for attack, done in zip(attacks, first, strict=True):
        again = run_attack(attack, original, ctx, tmp_path)  # quantized copies are rebuilt, the same
        assert again.reused == isinstance(attack, RelearnRetain)
        assert again.result.variants == done.result.variants
        assert done.result.input_fingerprint == original.fingerprint
        stored = [r.fingerprint for r in done.result.variants]
        assert [v.model.fingerprint for v in again.variants] == stored
        assert [variant_fingerprint(original.fingerprint, v.model.model, v.adapter) for v in again.variants] == stored
    assert _dir_digest(world.original) == before


def test_checkpointing_follows_the_free_memory(tiny, monkeypatch):
    """Activations are recomputed when the memory the rule may count on has no room for them."""
    loaded, ctx = tiny
    examples = item_examples(ctx.data.forget.items, ctx.prompts)
    assert 0 < activation_bytes(loaded, examples, 16) < 10 << 20  # a tiny model's batch: a few MB
    assert not RelearnForget()._checkpointing(loaded, examples)  # room: it trains faster without
    assert RelearnForget(checkpointing="true")._checkpointing(loaded, examples)
    monkeypatch.setenv("UNLEARN_AUDIT_MEMORY_BUDGET", "1K")  # as on a machine whose memory the models fill
    assert RelearnForget()._checkpointing(loaded, examples)
    assert not RelearnForget(checkpointing="false")._checkpointing(loaded, examples)
    with pytest.raises(UserError):
        RelearnForget(checkpointing="sometimes")
