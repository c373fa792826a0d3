"""Probe overhead: every built-in probe on the world's original versus one bare forward pass.

All probes run together on a fresh memoized ``ScoringModel``; the time spent
outside generation (teacher-forced statistics, per-item metrics, AUCs) is
compared with a bare batched forward pass over the same unique token sequences,
tokenized beforehand, with the same batch size and length bucketing. Target:
at most 1.3x. To keep generation out of that time, each timed run first
generates every prompt the probes will ask (timed apart), so the probes'
``generate_scored`` finds the texts held and scores the answers teacher-forced.
A third run per repeat gives the end-to-end time as audits run the probes, where
one prefill per prompt generates and scores. The probes' tokenization is memoized
per tokenizer (every model variant of an audit scores the same pairs), so after
the warm-up run it is
shared like the bare pass's; its one-off cost is printed separately, and so is
generation time. Each time is the best of ``--repeats`` interleaved runs; the
ratio is the median of the per-run ratios.

    UNLEARN_AUDIT_CACHE=.cache/unlearn-audit HF_HUB_OFFLINE=1 .venv/bin/python bench/probe_overhead.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from auditor.campaign.demo import world_data
from auditor.lm.models import load_model
from auditor.lm.scoring import ScoringModel, length_buckets
from auditor.lm.tokens import encode_pair, encode_pairs, pad_token_id
from auditor.plugins import RunContext
from auditor.registry import PROBES
from auditor.types import ModelSpec
from auditor.world import build_world

TARGET = 1.3


class TimedModel:
    """A ScoringModel proxy that records the pairs and the generation requests the probes ask for."""

    def __init__(self, lm: ScoringModel):
        self.lm = lm
        self.pairs: dict[tuple[str, str], None] = {}
        self.generations: dict[tuple[int, tuple[str, ...]], dict[str, None]] = {}  # (budget, stop) -> prompts

    def token_stats(self, pairs, groups=None, moments=False):
        self.pairs.update(dict.fromkeys(pairs))
        return self.lm.token_stats(pairs, groups, moments)

    def generate(self, prompts, max_new_tokens=32, stop=("\n",), groups=None):
        self.generations.setdefault((max_new_tokens, tuple(stop)), {}).update(dict.fromkeys(prompts))
        return self.lm.generate(prompts, max_new_tokens, stop, groups)

    def generate_scored(self, prompts, answers, max_new_tokens=32, stop=("\n",), groups=None):
        self.generations.setdefault((max_new_tokens, tuple(stop)), {}).update(dict.fromkeys(prompts))
        self.pairs.update(dict.fromkeys((p, a) for p, asked in zip(prompts, answers, strict=True) for a in asked))
        return self.lm.generate_scored(prompts, answers, max_new_tokens, stop, groups)


def run_probes(loaded, ctx: RunContext, generations: dict | None = None) -> tuple[float, float, TimedModel]:
    """(probe seconds, generation seconds, the timed model) of all probes on a fresh ScoringModel.

    With ``generations`` (recorded by an earlier run) every prompt is generated
    first and timed apart; the probe seconds then exclude generation.
    """
    lm = ScoringModel(loaded)
    timed = TimedModel(lm)
    start = time.perf_counter()
    for (budget, stop), prompts in (generations or {}).items():
        lm.generate(list(prompts), budget, stop)
    generating = time.perf_counter() - start
    start = time.perf_counter()
    for name in PROBES.names():
        result = PROBES.get(name)().run(timed, ctx, "original")
        if result.status != "ok":
            raise SystemExit(f"probe {name} did not run: {result.reason}")
    return time.perf_counter() - start, generating, timed


@torch.no_grad()
def bare_forward(model, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    start = time.perf_counter()
    for ids, attention in batches:
        model(input_ids=ids, attention_mask=attention, use_cache=False)
    return time.perf_counter() - start


def padded_batches(tokenizer, pairs, lm: ScoringModel) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded batches of length-sorted sequences (as ``teacher_forced`` builds them), tokenized up front."""
    encoded = [encode_pair(tokenizer, prompt, answer).input_ids for prompt, answer in pairs]
    pad = pad_token_id(tokenizer)
    batches = []
    for bucket in length_buckets([len(e) for e in encoded], lm.max_rows, lm.max_tokens):
        width = max(len(encoded[i]) for i in bucket)
        ids = torch.full((len(bucket), width), pad, dtype=torch.long)
        attention = torch.zeros((len(bucket), width), dtype=torch.long)
        for row, i in enumerate(bucket):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            attention[row, : len(encoded[i])] = 1
        batches.append((ids, attention))
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = build_world()
    loaded = load_model(ModelSpec(str(world.original), device="cpu"))
    ctx = RunContext(data=world_data(world), seed=0)
    _, _, timed = run_probes(loaded, ctx)  # warm-up; records the pairs and prompts the probes ask for
    start = time.perf_counter()
    encode_pairs(loaded.tokenizer, list(timed.pairs))
    tokenizing = time.perf_counter() - start
    batches = padded_batches(loaded.tokenizer, list(timed.pairs), timed.lm)
    probes, generation, bare, end_to_end = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so both sides see the same machine load
        probing, generating, _ = run_probes(loaded, ctx, timed.generations)
        probes.append(probing)
        generation.append(generating)
        bare.append(bare_forward(loaded.model, batches))
        end_to_end.append(run_probes(loaded, ctx)[0])
    ratio = statistics.median(p / b for p, b in zip(probes, bare, strict=True))
    print(f"probes: {', '.join(PROBES.names())}")
    print(f"unique teacher-forced sequences: {timed.lm.sequences_scored} (asked for {len(timed.pairs)} unique pairs)")
    print(f"generated prompts:               {timed.lm.prompts_generated}")
    print(f"bare batched forward pass:       {min(bare):8.3f} s (best of {args.repeats})")
    print(f"probes without generation:       {min(probes):8.3f} s (best of {args.repeats})")
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"ratio (median of paired runs):   {ratio:8.2f}x (target <= {TARGET}x: {verdict})")
    print(f"generation (for information):    {min(generation):8.3f} s")
    separate = min(p + g for p, g in zip(probes, generation, strict=True))
    print(f"generation, then probes:         {separate:8.3f} s (best of {args.repeats}, for information)")
    print(f"probes as audits run them:       {min(end_to_end):8.3f} s (one prefill per prompt generates and scores)")
    print(f"tokenizing the pairs, once:      {tokenizing:8.3f} s (for information)")


if __name__ == "__main__":
    main()
