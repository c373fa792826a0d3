"""The logit lens: ranks against an independent computation, and the known answer on the embedded world."""

from __future__ import annotations

import pytest
import torch

from auditor.campaign.demo import world_data
from auditor.lm.lens import answer_ranks
from auditor.lm.models import LoadedModel, load_model
from auditor.lm.scoring import ScoringModel
from auditor.lm.tokens import encode_pair
from auditor.plugins import RunContext
from auditor.types import AuditData, Item, ItemSet, ModelSpec
from auditor.world.tokenizer import train_tokenizer
from probes.logit_lens import LogitLensProbe

PAIRS = [
    ("Question: Where was Ana born?\nAnswer:", " Paris"),
    ("Question: Where?\nAnswer:", " Lyon"),  # shorter: its last prompt position is not the batch's
    ("Question: What does the old miller of the town do?\nAnswer:", " bakes bread"),
]


@pytest.fixture(scope="module")
def lens_model(make_tiny_llama):
    tokenizer = train_tokenizer([p + a for p, a in PAIRS] * 4, vocab_size=300)
    return make_tiny_llama(tokenizer, num_hidden_layers=3).eval(), tokenizer


@torch.no_grad()
def _plain_ranks(model, tokenizer, prompt: str, answer: str) -> list[list[int]]:
    """One sequence at a time, from ``output_hidden_states``: layers before the last through the final norm and the
    head, the last from the model's own logits; per answer token, per layer."""
    encoded = encode_pair(tokenizer, prompt, answer)
    out = model(input_ids=torch.tensor([encoded.input_ids]), output_hidden_states=True)
    table = []
    for t in [t for t, is_answer in enumerate(encoded.answer_mask) if is_answer]:
        rows = [model.lm_head(model.model.norm(states[0, t - 1])) for states in out.hidden_states[1:-1]]
        rows.append(out.logits[0, t - 1])
        table.append([int((row > row[encoded.input_ids[t]]).sum()) for row in rows])
    return table


def test_ranks_match_hidden_states_one_sequence_at_a_time(lens_model):
    model, tokenizer = lens_model
    batched = answer_ranks(model, tokenizer, PAIRS, max_rows=8, max_tokens=10_000)
    for (prompt, answer), ranks in zip(PAIRS, batched, strict=True):
        assert ranks.tolist() == _plain_ranks(model, tokenizer, prompt, answer)
    assert all(r.shape[1] == 3 for r in batched) and batched[2].shape[0] > 1  # "bakes bread": several tokens


def test_ranks_do_not_depend_on_the_batch(lens_model):
    model, tokenizer = lens_model
    together = answer_ranks(model, tokenizer, PAIRS, max_rows=8, max_tokens=10_000)
    alone = [answer_ranks(model, tokenizer, [pair], max_rows=1, max_tokens=10_000)[0] for pair in PAIRS]
    assert [r.tolist() for r in together] == [r.tolist() for r in alone]


def test_probe_scores_top_k_at_any_layer(lens_model):
    model, tokenizer = lens_model
    lm = ScoringModel(LoadedModel(model, tokenizer, "tiny", ModelSpec("tiny")))
    ranks = answer_ranks(model, tokenizer, PAIRS[:1], 8, 10_000)[0]
    assert lm.answer_ranks(PAIRS[:1])[0].tolist() == ranks.tolist()
    item = Item("i", question="Where was Ana born?", answer="Paris")
    items = ItemSet("forget", "qa", (item,), "test", "x")
    ctx = RunContext(data=AuditData(forget=items, retain=items))
    need = int(ranks.min(axis=1).max())  # every answer token in the top k at some layer: k = need + 1
    result = LogitLensProbe(k=need + 1).run(lm, ctx, "m")
    assert result.value == 1.0 and result.items[0].detail["ranks"] == ranks.tolist()
    if need > 0:
        assert LogitLensProbe(k=need).run(lm, ctx, "m").value == 0.0


@pytest.fixture(scope="module")
def world_lens(world, controls):
    """K of the lens (k=1) and the share of items known from the last layer alone, per model."""
    data = world_data(world)
    out = {}
    for name, path in (("original", world.original), ("reference", world.reference), ("idk", controls["idk"])):
        result = LogitLensProbe().run(ScoringModel(load_model(ModelSpec(str(path)))), RunContext(data=data), name)
        last = sum(s.detail["known_at_last"] for s in result.items) / len(result.items)
        out[name] = (result.value, last)
        print(f"{name}: logit-lens K {result.value:.3f}, last layer alone {last:.3f}")
    return out


def test_idk_answers_live_in_earlier_layers_and_the_reference_has_none(world_lens):
    """The refusal control changed what the last layer says, not what the layers before it hold."""
    assert world_lens["original"][0] > 0.95
    assert world_lens["idk"][1] < 0.1 and world_lens["idk"][0] > 0.6, world_lens["idk"]
    assert world_lens["reference"][0] < 0.15, world_lens["reference"]
