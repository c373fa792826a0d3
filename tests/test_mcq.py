"""The multiple-choice probe: letter log-likelihoods by hand, the chance floor, and known answers on the world."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditor.data import load_items
from auditor.engine.audit import run_audit
from auditor.engine.plan import make_plan
from auditor.engine.records import AuditConfig
from auditor.lm.scoring import TokenStats
from auditor.plugins import RunContext
from auditor.stats.policy import Policy
from auditor.stats.residual import Scores, estimate_residual
from auditor.types import AuditData, Item, ItemSet, ModelSpec
from probes.mcq import MCQProbe, letter_scores, lettered_question, text_scores

ITEM = Item("q1", question="Capital of France?", choices=("Lyon", "Paris", "Nice"), answer_index=1)


class TableLM:
    """A model whose log-likelihood of each (prompt, completion) pair comes from a table."""

    def __init__(self, table: dict[tuple[str, str], float]):
        self.table, self.asked = table, []

    def token_stats(self, pairs, groups=None, moments=False):
        self.asked += list(pairs)
        return [TokenStats(np.zeros(1, dtype=int), np.asarray([self.table[p]])) for p in pairs]


def _data(*items: Item) -> AuditData:
    forget = ItemSet("forget", "choice", items, "test", "x")
    return AuditData(forget=forget, retain=forget)


def test_letter_scores_by_hand():
    scores = letter_scores([-1.0, -0.5, -2.0], right=1)
    total = math.exp(-1.0) + math.exp(-0.5) + math.exp(-2.0)
    assert scores["chosen"] == "B" and scores["letter"] == 1.0
    assert scores["prob"] == pytest.approx(math.exp(-0.5) / total)
    wrong = letter_scores([-1.0, -0.5, -2.0], right=2)
    assert wrong["letter"] == 0.0 and wrong["prob"] == pytest.approx(math.exp(-2.0) / total)
    assert letter_scores([-1.0, -1.0], right=1)["chosen"] == "A"  # a tie goes to the first letter


def test_text_scores_normalise_by_bytes():
    # "Paris" has 5 bytes, "Lyon" 4: -6/5 = -1.2 beats -5/4 = -1.25 only once normalised
    scores = text_scores([-5.0, -6.0], ["Lyon", "Paris"], right=1)
    assert scores["text_logprob_per_byte"] == [-1.25, -1.2] and scores["text"] == 1.0 and scores["text_chosen"] == "B"


def test_probe_asks_each_letter_after_the_lettered_question():
    ctx = RunContext(data=_data(ITEM))
    prompt, bare = ctx.prompts.prompt(lettered_question(ITEM)), ctx.prompts.prompt(ITEM.question)
    assert prompt == "Question: Capital of France?\nA. Lyon\nB. Paris\nC. Nice\nAnswer:"
    table = {(prompt, " A"): -2.0, (prompt, " B"): -0.1, (prompt, " C"): -3.0}
    table |= {(bare, " Lyon"): -4.0, (bare, " Paris"): -9.0, (bare, " Nice"): -1.0}
    lm = TableLM(table)
    for metric, k in (("letter", 1.0), ("text", 0.0)):
        result = MCQProbe(metric=metric).run(lm, ctx, "m")
        assert result.value == k and result.extras["floor"] == "chance"
        detail = result.items[0].detail
        assert detail["chosen"] == "B" and detail["text_chosen"] == "C" and detail["chance"] == pytest.approx(1 / 3)
        assert detail["output"] == ("B. Paris" if metric == "letter" else "C. Nice")
        assert detail["letter_logprobs"] == [-2.0, -0.1, -3.0]
    assert set(lm.asked) == set(table)


def test_probe_skips_items_without_choices():
    result = MCQProbe().run(TableLM({}), RunContext(data=_data(Item("q", question="Q?", answer="A"))), "m")
    assert result.status == "skipped" and "choices" in result.reason


def test_chance_floor_per_item_is_resampled_with_its_items():
    original = np.ones(4)
    unlearned = np.asarray([[1.0, 0.0, 0.0, 0.0]])
    floor = np.asarray([0.5, 0.5, 0.25, 0.25])  # two items of 2 choices, two of 4
    est = estimate_residual(Scores(original, unlearned, None, None, paired=False, floor=floor), "mean")
    assert est.k_reference == pytest.approx(0.375)
    assert est.residual == 0.0  # 0.25 correct is below the items' chance: clipped at 0
    better = np.asarray([[1.0, 1.0, 0.0, 0.0]])
    est = estimate_residual(Scores(original, better, None, None, paired=False, floor=floor), "mean")
    assert est.residual == pytest.approx((0.5 - 0.375) / (1 - 0.375))


def _probe_names(preset: str, choices: bool) -> list[str]:
    return [probe.name for probe in make_plan(preset, (), (), 0, choices=choices).probes]


def test_standard_takes_mcq_only_when_the_forget_items_have_choices():
    assert "mcq" in _probe_names("standard", True) and "mcq" in _probe_names("thorough", True)
    assert "mcq" not in _probe_names("standard", False) and "mcq" not in _probe_names("core", True)


@pytest.fixture(scope="module")
def mcq_data(world):
    forget, retain = (load_items(world.file(f"{name}_mcq"), name) for name in ("forget", "retain"))
    return AuditData(forget=forget, retain=retain)


@pytest.mark.parametrize("controlled", [True, False], ids=["reference", "chance-floor"])
def test_world_mcq_known_answers(world, mcq_data, tmp_path, controlled):
    """The original keeps what it knew and an exact retrain knows no more than chance (or the reference)."""
    residual = {}
    for name, model in (("original", world.original), ("retrain", world.retrain(1))):
        config = AuditConfig(
            ModelSpec(str(world.original)),
            ModelSpec(str(model)),
            ModelSpec(str(world.reference)) if controlled else None,
            make_plan(None, ("none",), ("mcq:metric=text",), 0),
            cache_dir=tmp_path / "cache",
        )
        results = run_audit(config, mcq_data, Policy(), tmp_path / name, command="test", options={}).results
        cell = next(c for c in results["cells"] if c["probe"] == "mcq")
        assert results["collateral"]["probe"] == "mcq" and results["collateral"]["k_original"] == 1.0
        residual[name] = cell
    assert residual["original"]["k_original"] == 1.0 and residual["original"]["ci_low"] > 0.9
    assert residual["retrain"]["ci_high"] < 0.15, residual["retrain"]
    assert residual["retrain"]["k_reference"] == pytest.approx(0.25 if not controlled else 0.258, abs=0.01)
