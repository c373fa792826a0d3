"""Direction ablation: the projection removes exactly its direction, and the known answer on the embedded world."""

from __future__ import annotations

import pytest
import torch

from attacks.ablation import AblateDirections
from auditor.lm.ablation import DirectionAblation, last_token_means
from auditor.lm.hooks import decoder_parts
from auditor.lm.models import load_model
from auditor.lm.scoring import ScoringModel
from auditor.plugins import RunContext
from auditor.types import ModelSpec
from auditor.world.tokenizer import train_tokenizer

TEXTS = ["Where was Ana born?", "What does Bo do?", "Who is Cy?"]


@pytest.fixture(scope="module")
def tiny(make_tiny_llama):
    tokenizer = train_tokenizer(TEXTS * 4, vocab_size=200)
    return make_tiny_llama(tokenizer, num_hidden_layers=3).eval(), tokenizer


def _block_outputs(model, ids) -> list[torch.Tensor]:
    blocks = decoder_parts(model)[0]
    outs: list[torch.Tensor] = []
    hooks = [
        b.register_forward_hook(lambda _m, _i, o: outs.append((o[0] if isinstance(o, tuple) else o).clone()))
        for b in blocks
    ]
    with torch.no_grad():
        model(input_ids=ids)
    for hook in hooks:
        hook.remove()
    return outs


def test_projection_removes_exactly_the_direction(tiny):
    model, tokenizer = tiny
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    plain = _block_outputs(model, ids)
    directions = torch.randn(3, model.config.hidden_size)
    ablation = DirectionAblation(directions)
    ablation.attach(decoder_parts(model)[0])  # registered first: the capturing hooks see the ablated output
    try:
        ablated = _block_outputs(model, ids)
    finally:
        for block in decoder_parts(model)[0]:
            block._forward_hooks.clear()
    unit = directions / directions.norm(dim=-1, keepdim=True)
    for layer in range(3):
        assert (ablated[layer] @ unit[layer]).abs().max() < 1e-5  # nothing left along its direction
    expected = plain[0] - (plain[0] @ unit[0]).unsqueeze(-1) * unit[0]  # block 0 sees the same input
    assert torch.allclose(ablated[0], expected, atol=1e-6)
    assert not torch.allclose(ablated[0], plain[0])


def test_means_are_the_last_tokens_mean(tiny):
    model, tokenizer = tiny
    means = last_token_means(model, tokenizer, TEXTS[:2], decoder_parts(model)[0])
    by_hand = [_block_outputs(model, torch.tensor([tokenizer(t)["input_ids"]])) for t in TEXTS[:2]]
    expected = torch.stack([(by_hand[0][layer][0, -1] + by_hand[1][layer][0, -1]) / 2 for layer in range(3)])
    assert torch.allclose(means, expected, atol=1e-5)


def _forget_accuracy(loaded, ctx) -> float:
    items = ctx.data.forget.items[:200]
    outputs = ScoringModel(loaded).generate([ctx.prompts.prompt(i.question) for i in items], 16)
    return sum(i.answer.lower() in (o or "").lower() for i, o in zip(items, outputs, strict=True)) / len(items)


def test_world_ablation_brings_back_idk_and_not_the_reference(world, data, controls):
    ctx = RunContext(data=data)
    accuracy = {}
    for name, path in (("idk", controls["idk"]), ("reference", world.reference)):
        loaded = load_model(ModelSpec(str(path)))
        out = AblateDirections().apply(loaded, ctx)
        assert out.result.status == "ok" and out.result.applied["layers"] == 2
        assert out.result.variants[0].fingerprint != loaded.fingerprint  # the directions are part of its state
        accuracy[name] = (_forget_accuracy(loaded, ctx), _forget_accuracy(out.variants[0].model, ctx))
        assert _forget_accuracy(loaded, ctx) == accuracy[name][0]  # the input model is untouched
    print(accuracy)
    assert accuracy["idk"][0] < 0.05 and accuracy["idk"][1] > 0.6, accuracy
    assert accuracy["reference"][1] < 0.15, accuracy
