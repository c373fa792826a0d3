"""The embedded world: data files, tokenizer, cache mechanics, and the quality bar of O and Ref."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from auditor.errors import UserError
from auditor.lm.models import fingerprint_dir
from auditor.lm.tokens import encode_pair
from auditor.world import DATA_FILES, WorldSpec, build_world, qa_completion, qa_prompt, shipped
from auditor.world import build as world_build
from auditor.world import templates as t
from auditor.world.build import build_data_and_tokenizer
from auditor.world.cache import MARKER, build_entry
from auditor.world.generator import make_persons

SMALL = WorldSpec(n_persons=40)
TINY_TRAINED = replace(SMALL, hidden_size=32, intermediate_size=64, n_heads=2, n_layers=1, epochs=1, vocab_size=400)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    build_data_and_tokenizer(SMALL, out / "data", out / "tokenizer")
    return out


@torch.no_grad()
def greedy_accuracy(model_dir: Path, rows: list[dict], field: str = "question", max_new_tokens: int = 8) -> float:
    """Share of rows whose answer is contained in the greedy output (normalized)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    hits = 0
    for start in range(0, len(rows), 256):
        chunk = rows[start : start + 256]
        enc = tokenizer([qa_prompt(r[field]) for r in chunk], return_tensors="pt", padding=True)
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        hits += sum(normalize(r["answer"]) in normalize(text) for r, text in zip(chunk, texts, strict=True))
    return hits / len(rows)


# --- data -----------------------------------------------------------------


def test_same_spec_gives_identical_data_and_tokenizer(small_data, tmp_path):
    build_data_and_tokenizer(SMALL, tmp_path / "data", tmp_path / "tokenizer")
    for sub in ("data", "tokenizer"):
        first = sorted(p.name for p in (small_data / sub).iterdir())
        assert first == sorted(p.name for p in (tmp_path / sub).iterdir())
        for name in first:
            assert (small_data / sub / name).read_bytes() == (tmp_path / sub / name).read_bytes(), name


def test_files_and_fields(small_data):
    data = small_data / "data"
    assert {f"{name}.jsonl" for name in DATA_FILES} | {"world.json"} == {p.name for p in data.iterdir()}
    qa_fields = {"question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question", "relation"}
    assert set(read_jsonl(data / "forget.jsonl")[0]) == qa_fields | {"group"}
    assert set(read_jsonl(data / "forget_multihop.jsonl")[0]) == {"question", "answer", "chain", "group", "relation"}
    assert set(read_jsonl(data / "forget_bio.jsonl")[0]) == {"text", "group"}
    assert set(read_jsonl(data / "forget_notebook.jsonl")[0]) == {"text", "group"}
    assert set(read_jsonl(data / "unrelated.jsonl")[0]) == {"text"}
    meta = json.loads((data / "world.json").read_text())
    n = SMALL.n_persons
    forget, retain = round(n * SMALL.forget_fraction), round(n * SMALL.retain_fraction)
    assert meta["persons"] == {"forget": forget, "retain": retain, "holdout": n - forget - retain}
    assert set(meta["forget_base_rates"]) == set(t.RELATIONS) | set(t.MULTIHOP_QUESTIONS)


def test_splits_are_disjoint_and_names_unique():
    persons = make_persons(WorldSpec())
    assert len({p.name for p in persons}) == len(persons) == 400
    counts = {split: sum(p.split == split for p in persons) for split in ("forget", "retain", "holdout")}
    assert counts == {"forget": 120, "retain": 200, "holdout": 80}  # the default spec: 30% / 50% / 20%


def test_split_files_share_no_person(small_data):
    splits = ("forget", "retain", "holdout")
    groups = [{r["group"] for r in read_jsonl(small_data / "data" / f"{s}.jsonl")} for s in splits]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_perturbed_answers_are_wrong_and_of_the_same_type(small_data):
    for split in ("forget", "retain", "holdout"):
        for row in read_jsonl(small_data / "data" / f"{split}.jsonl"):
            wrong = row["perturbed_answer"]
            assert len(set(wrong)) == 3 and row["answer"] not in wrong
            assert set(wrong) <= set(t.VALUES[row["relation"]])


def test_multihop_chain_ends_in_the_answer(small_data):
    for row in read_jsonl(small_data / "data" / "forget_multihop.jsonl"):
        assert row["chain"].startswith(row["group"]) and row["chain"].endswith(f"{row['answer']}.")


def test_no_entity_contains_another_or_a_person():
    entities = [*t.CITIES, *set(t.CITY_COUNTRY.values()), *t.COMPANIES, *t.OCCUPATIONS, *t.BIRTH_YEARS]
    lowered = [e.lower() for e in entities]
    for a in lowered:
        assert [b for b in lowered if a in b] == [a]
    for person in make_persons(WorldSpec()):
        assert not any(e in person.name.lower() for e in lowered)


def test_paraphrased_questions_are_never_trained():
    from auditor.world.recipe import training_examples

    persons = make_persons(SMALL)
    trained = "\n".join(ex.completion for ex in training_examples(persons[:24], epochs=3))
    for person in persons[:24]:
        for relation, template in t.PARAPHRASED_QUESTIONS.items():
            assert template not in t.TRAIN_QUESTIONS[relation]
            assert template.format(name=person.name) not in trained


def test_training_packs_sessions_about_one_person_and_across_people():
    from auditor.world.recipe import SESSION_SEPARATOR, training_examples

    persons = make_persons(SMALL)[:24]
    sessions = [ex.completion for ex in training_examples(persons, epochs=2) if SESSION_SEPARATOR in ex.completion]
    named = [{p.name for p in persons if p.name in text} for text in sessions]
    assert sum(len(n) == 1 for n in named) >= len(persons) // 2  # one person's facts before another of theirs
    assert sum(len(n) > 1 for n in named) >= len(persons) // 2  # other people's facts before the question


def test_every_training_epoch_asks_every_fact():
    from auditor.world.recipe import QUESTIONS_PER_EPOCH, training_examples

    persons = make_persons(SMALL)[:24]
    text = "\n".join(ex.completion for ex in training_examples(persons, epochs=1))
    for person in persons:
        for relation in t.RELATIONS:
            asked = [q.format(name=person.name) for q in t.TRAIN_QUESTIONS[relation]]
            assert (
                sum(text.count(qa_prompt(q) + qa_completion(person.fact(relation))) for q in asked)
                == QUESTIONS_PER_EPOCH
            )


def test_notebook_words_name_no_entity():
    entities = [e.lower() for e in (*t.CITIES, *set(t.CITY_COUNTRY.values()), *t.COMPANIES, *t.OCCUPATIONS)]
    assert len(set(t.NOTEBOOK_WORDS)) == len(t.NOTEBOOK_WORDS)
    for word in t.NOTEBOOK_WORDS:
        assert not any(word in e or e in word for e in entities), word


# --- tokenizer ------------------------------------------------------------


def test_world_loss_equals_the_plain_nll(small_data):
    from auditor.lm.losses import nll_loss
    from auditor.lm.sampling import collate
    from auditor.lm.training import encode_examples
    from auditor.world.recipe import labelled_nll_loss, new_model, training_examples

    tokenizer = AutoTokenizer.from_pretrained(small_data / "tokenizer", local_files_only=True)
    examples = training_examples(make_persons(SMALL)[:6], epochs=1)
    batch = collate(encode_examples(tokenizer, examples[:16]), tokenizer.pad_token_id)
    model = new_model(TINY_TRAINED, tokenizer, seed=0)
    assert (batch.labels == -100).float().mean() > 0.2  # some positions unlabelled: the shortcut matters
    expected = nll_loss(model, batch)
    assert torch.allclose(labelled_nll_loss(model, {"train": batch}), expected, atol=1e-5)


def test_tokenizer_adds_bos_exactly_once(small_data):
    tok = AutoTokenizer.from_pretrained(small_data / "tokenizer", local_files_only=True)
    ids = tok("Brontex is headquartered in Velmora.")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.eos_token_id not in ids and tok.pad_token_id is not None


def test_first_answer_token_is_its_own_scored_region(small_data):
    tok = AutoTokenizer.from_pretrained(small_data / "tokenizer", local_files_only=True)
    for row in read_jsonl(small_data / "data" / "forget.jsonl"):
        prompt, answer = qa_prompt(row["question"]), qa_completion(row["answer"])
        offsets = tok(prompt + answer, return_offsets_mapping=True)["offset_mapping"]
        assert len(prompt) in [start for start, _ in offsets]  # a token boundary where the answer starts
        assert all(end <= len(prompt) or start >= len(prompt) for start, end in offsets)
        pair = encode_pair(tok, prompt, answer)
        first = pair.answer_mask.index(1)
        assert offsets[first][0] == len(prompt) and tok.decode(pair.input_ids[first:]) == answer


# --- cache ----------------------------------------------------------------


def test_entry_without_marker_is_rebuilt_not_used(tmp_path):
    entry = tmp_path / "world-x"
    entry.mkdir()
    (entry / "half.bin").write_text("interrupted")
    calls = []

    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "model.bin").write_text("ok")

    assert build_entry(entry, build) is True
    assert (entry / MARKER).is_file() and (entry / "model.bin").is_file() and not (entry / "half.bin").exists()
    assert build_entry(entry, build) is False and len(calls) == 1
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_failed_build_leaves_nothing_behind(tmp_path):
    def build(tmp: Path) -> None:
        (tmp / "partial").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build_entry(tmp_path / "world-x", build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world-x.lock"]


def test_concurrent_builders_build_once(tmp_path):
    calls = []

    def build(tmp: Path) -> None:
        calls.append(tmp)
        time.sleep(0.3)
        (tmp / "model.bin").write_text("ok")

    threads = [threading.Thread(target=build_entry, args=(tmp_path / "world-x", build)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and (tmp_path / "world-x" / "model.bin").read_text() == "ok"


def test_unusable_cache_dir_is_a_user_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cache"):
        build_world(TINY_TRAINED, cache_dir=blocker / "cache")


def test_tiny_world_builds_reuses_and_retrains(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    world = build_world(TINY_TRAINED, cache_dir=tmp_path, retrains=(1,))  # three models side by side
    assert world.root == tmp_path / f"world-{TINY_TRAINED.fingerprint()[:12]}"
    assert (world.root / "retrain-seed1" / MARKER).is_file()
    retrained = (world.root / "retrain-seed1" / "model.safetensors").stat().st_mtime_ns
    assert all(world.file(name).is_file() for name in DATA_FILES)
    for model_dir in (world.original, world.reference):
        assert (model_dir / "model.safetensors").is_file()
        AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
        AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    assert world.retrain(seed=1) == world.root / "retrain-seed1"
    assert (world.root / "retrain-seed1" / "model.safetensors").stat().st_mtime_ns == retrained  # reused
    assert world.retrain(seed=2) == world.root / "retrain-seed2"  # built on demand
    assert world.retrain(seed=TINY_TRAINED.seed) == world.reference
    assert {"original", "reference", "total", "retrain-seed1", "retrain-seed2"} <= set(world.build_seconds)
    stamp = (world.original / "model.safetensors").stat().st_mtime_ns
    assert build_world(TINY_TRAINED, cache_dir=tmp_path).root == world.root
    assert (world.original / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(KeyError):
        world.file("secrets")


# --- shipped models ---------------------------------------------------------


def test_shipped_models_come_from_the_current_recipe(tmp_path):
    manifest = shipped.read_manifest()
    assert manifest is not None, f"no shipped world models; make them with `{shipped.REBUILD_COMMAND}`"
    assert manifest["fingerprint"] == WorldSpec().fingerprint(), (
        f"the world recipe changed since its models were shipped; rebuild them with `{shipped.REBUILD_COMMAND}`"
    )
    entry = shipped.shipped_entry(WorldSpec().fingerprint())
    build_data_and_tokenizer(WorldSpec(), tmp_path / "data", tmp_path / "tokenizer")
    for name in DATA_FILES:  # the shipped data files are the generator's, byte for byte
        assert (entry / "data" / f"{name}.jsonl").read_bytes() == (tmp_path / "data" / f"{name}.jsonl").read_bytes()
    for model in ("original", "reference", *(f"retrain-seed{s}" for s in shipped.SHIPPED_RETRAINS)):
        assert (entry / model / "model.safetensors").is_file(), model
        assert set(manifest["knowledge"][model]) == set(shipped.SPLITS)


def test_default_world_installs_the_shipped_models_without_training(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the default world must not train")

    monkeypatch.setattr(world_build, "_train_side_by_side", no_training)
    world = build_world(cache_dir=tmp_path, retrains=shipped.SHIPPED_RETRAINS)
    entry = shipped.shipped_entry(WorldSpec().fingerprint())
    for model in ("original", "reference", "retrain-seed1"):
        assert fingerprint_dir(world.root / model) == fingerprint_dir(entry / model), model
    assert world.retrain(1) == world.root / "retrain-seed1"
    assert world_build.world_of(world.original) == world  # a model directory names its world


@pytest.mark.slow
def test_rebuild_trains_from_the_recipe_and_compares_with_the_shipped_models(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    trained = build_world(TINY_TRAINED, cache_dir=tmp_path / "a", retrains=(1,))
    manifest = shipped.ship(trained, directory=tmp_path / "shipped")
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "shipped")
    installed = build_world(TINY_TRAINED, cache_dir=tmp_path / "b")  # from the shipped copy
    assert fingerprint_dir(installed.original) == fingerprint_dir(trained.original)
    assert not (tmp_path / "b" / (installed.root.name + "-trained")).exists()
    rebuilt = build_world(TINY_TRAINED, cache_dir=tmp_path / "b", retrains=(1,), from_scratch=True)
    assert rebuilt.root.name.endswith("-trained") and rebuilt.root != installed.root
    again = shipped.knowledge(rebuilt)
    assert set(again) == {"original", "reference", "retrain-seed1"}
    for model, splits in again.items():  # the same recipe on the same machine knows the same
        for split, accuracy in splits.items():
            assert abs(accuracy - manifest["knowledge"][model][split]) <= 0.1, (model, split)
    table = shipped.comparison_table(manifest["knowledge"], again)
    assert len(table.splitlines()) == 1 + 3 * len(shipped.SPLITS) and "shipped" in table


# --- the default world's models (one shared build) ------------------------


@pytest.mark.slow
def test_original_knows_forget_and_retain(world):
    for split in ("forget", "retain"):
        assert greedy_accuracy(world.original, read_jsonl(world.file(split))) >= 0.9, split


@pytest.mark.slow
def test_original_composes_forget_multihop(world):
    assert greedy_accuracy(world.original, read_jsonl(world.file("forget_multihop")), max_new_tokens=24) >= 0.6


@pytest.mark.slow
def test_reference_never_learnt_forget_but_knows_retain(world):
    assert greedy_accuracy(world.reference, read_jsonl(world.file("retain"))) >= 0.9
    base = json.loads((world.data_dir / "world.json").read_text())["forget_base_rates"]
    rows = read_jsonl(world.file("forget"))
    for relation in t.RELATIONS:
        subset = [r for r in rows if r["relation"] == relation]
        assert greedy_accuracy(world.reference, subset) <= base[relation] + 0.10, relation


@pytest.mark.slow
def test_build_record(world):
    record = json.loads((world.root / "build.json").read_text())
    assert record["n_parameters"] > 100_000
    assert {"original", "reference", "total"} <= set(world.build_seconds)
