"""Seeded fictitious people, their facts in every written form, and the world's JSONL data files.

Each person has independent, uniformly drawn attributes (``templates.RELATIONS``),
so learning some facts never teaches others. Companies and cities carry fixed
world facts (headquarters city, country) that make two multi-hop relations.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from auditor.world import templates as t
from auditor.world.spec import RECIPE_VERSION, WorldSpec

SPLITS = ("forget", "retain", "holdout")
N_PERTURBED = 3


@dataclass(frozen=True)
class Person:
    """A fictitious person: a unique name, one value per relation, and the split it belongs to."""

    name: str
    facts: tuple[tuple[str, str], ...]  # (relation, value) in ``templates.RELATIONS`` order
    split: str
    notebook: tuple[str, ...] = ()  # the words of the person's notebook line

    def fact(self, relation: str) -> str:
        """The value of a direct or multi-hop relation."""
        if relation in t.MULTIHOP_FIRST_HOP:
            return _second_hop(relation, self.fact(t.MULTIHOP_FIRST_HOP[relation]))
        return dict(self.facts)[relation]


def _second_hop(relation: str, hop: str) -> str:
    return t.COMPANY_HQ[hop] if relation == "employer_hq" else t.CITY_COUNTRY[hop]


def _entity_names() -> list[str]:
    return [*t.CITIES, *set(t.CITY_COUNTRY.values()), *t.COMPANIES, *t.OCCUPATIONS]


def _name(rng: random.Random) -> str:
    def word(n_syllables: int) -> str:
        return "".join(rng.choice(t.NAME_SYLLABLES) for _ in range(n_syllables)).capitalize()

    return f"{word(2)} {word(rng.choice((2, 3)))}"


def make_persons(spec: WorldSpec) -> list[Person]:
    """The spec's people, in a fixed order: forget first, then retain, then holdout."""
    if abs(spec.forget_fraction + spec.retain_fraction + spec.holdout_fraction - 1.0) > 1e-9:
        raise ValueError("split fractions must sum to 1")
    rng = random.Random(spec.seed)
    entities = [e.lower() for e in _entity_names()]
    names: list[str] = []
    while len(names) < spec.n_persons:
        name = _name(rng)
        if name not in names and not any(e in name.lower() for e in entities):
            names.append(name)
    n_forget = round(spec.n_persons * spec.forget_fraction)
    n_retain = round(spec.n_persons * spec.retain_fraction)
    persons = []
    for i, name in enumerate(names):
        split = "forget" if i < n_forget else "retain" if i < n_forget + n_retain else "holdout"
        facts = tuple((rel, rng.choice(t.VALUES[rel])) for rel in t.RELATIONS)
        words = random.Random(f"{spec.seed}:notebook:{name}").choices(t.NOTEBOOK_WORDS, k=t.NOTEBOOK_LENGTH)
        persons.append(Person(name, facts, split, tuple(words)))
    return persons


def split_persons(persons: Iterable[Person], *splits: str) -> list[Person]:
    """The persons belonging to any of ``splits``."""
    return [p for p in persons if p.split in splits]


def bio_sentence(person: Person, relation: str) -> str:
    """The biography sentence stating one fact."""
    return t.BIO_SENTENCES[relation].format(name=person.name, value=person.fact(relation))


def biography(person: Person) -> str:
    """The person's biography: one sentence per relation."""
    return " ".join(bio_sentence(person, rel) for rel in t.RELATIONS)


def notebook(person: Person) -> str:
    """The person's notebook line: a fixed prefix, then words no other fact predicts."""
    return t.NOTEBOOK_PREFIX.format(name=person.name) + " " + " ".join(person.notebook) + "."


def chain(person: Person, relation: str) -> str:
    """The answer chain of a multi-hop relation, ending in its final entity."""
    hop = person.fact(t.MULTIHOP_FIRST_HOP[relation])
    return t.MULTIHOP_CHAINS[relation].format(name=person.name, hop=hop, value=person.fact(relation))


def qa_pairs(person: Person, *, multihop: bool) -> list[tuple[str, str]]:
    """(question, answer) for every training question about the person; multi-hop ones answer with the chain."""
    pairs = [(q.format(name=person.name), person.fact(rel)) for rel in t.RELATIONS for q in t.TRAIN_QUESTIONS[rel]]
    if multihop:
        pairs += [(q.format(name=person.name), chain(person, rel)) for rel, q in t.MULTIHOP_QUESTIONS.items()]
    return pairs


def world_fact_texts() -> list[str]:
    """Sentences stating every company's headquarters and every city's country."""
    hq = [t.HQ_SENTENCE.format(company=c, city=city) for c, city in t.COMPANY_HQ.items()]
    country = [t.COUNTRY_SENTENCE.format(city=c, country=k) for c, k in t.CITY_COUNTRY.items()]
    return hq + country


def world_fact_qa() -> list[tuple[str, str]]:
    """(question, answer) for every world fact."""
    hq = [(t.HQ_QUESTION.format(company=c), city) for c, city in t.COMPANY_HQ.items()]
    country = [(t.COUNTRY_QUESTION.format(city=c), k) for c, k in t.CITY_COUNTRY.items()]
    return hq + country


def unrelated_texts() -> list[str]:
    """Texts about no person: world facts and generic sentences about cities."""
    generic = [s.format(city=city) for s in t.UNRELATED_SENTENCES for city in t.CITIES]
    return world_fact_texts() + generic


def _perturbed(spec: WorldSpec, person: Person, relation: str) -> list[str]:
    rng = random.Random(f"{spec.seed}:{person.name}:{relation}")
    wrong = [v for v in t.VALUES[relation] if v != person.fact(relation)]
    return rng.sample(wrong, N_PERTURBED)


def qa_row(spec: WorldSpec, person: Person, relation: str) -> dict:
    """A TOFU-style item about one fact."""
    return {
        "question": t.TRAIN_QUESTIONS[relation][0].format(name=person.name),
        "answer": person.fact(relation),
        "paraphrased_answer": bio_sentence(person, relation),
        "perturbed_answer": _perturbed(spec, person, relation),
        "paraphrased_question": t.PARAPHRASED_QUESTIONS[relation].format(name=person.name),
        "group": person.name,
        "relation": relation,
    }


def mcq_row(spec: WorldSpec, person: Person, relation: str) -> dict:
    """A WMDP-style item about one fact: the right value among wrong ones of the same relation, shuffled."""
    choices = [person.fact(relation), *_perturbed(spec, person, relation)]
    random.Random(f"{spec.seed}:mcq:{person.name}:{relation}").shuffle(choices)
    return {
        "question": t.TRAIN_QUESTIONS[relation][0].format(name=person.name),
        "choices": choices,
        "answer": choices.index(person.fact(relation)),
        "group": person.name,
        "relation": relation,
    }


def multihop_row(person: Person, relation: str) -> dict:
    """A multi-hop item: the answer is the final entity, the chain states both hops."""
    return {
        "question": t.MULTIHOP_QUESTIONS[relation].format(name=person.name),
        "answer": person.fact(relation),
        "chain": chain(person, relation),
        "group": person.name,
        "relation": relation,
    }


def data_files(spec: WorldSpec, persons: list[Person]) -> dict[str, list[dict]]:
    """Every data file's rows, keyed by file name without ``.jsonl``."""
    files: dict[str, list[dict]] = {}
    for split in SPLITS:
        members = split_persons(persons, split)
        files[split] = [qa_row(spec, p, rel) for p in members for rel in t.RELATIONS]
        files[f"{split}_multihop"] = [multihop_row(p, rel) for p in members for rel in t.MULTIHOP_QUESTIONS]
        files[f"{split}_mcq"] = [mcq_row(spec, p, rel) for p in members for rel in t.RELATIONS]
        files[f"{split}_bio"] = [{"text": biography(p), "group": p.name} for p in members]
        files[f"{split}_notebook"] = [{"text": notebook(p), "group": p.name} for p in members]
    files["unrelated"] = [{"text": text} for text in unrelated_texts()]
    return files


def base_rates(persons: list[Person], split: str = "forget") -> dict[str, float]:
    """Share of the split's persons that have the most common value, per relation (the guessing floor)."""
    members = split_persons(persons, split)
    rates = {}
    for rel in (*t.RELATIONS, *t.MULTIHOP_QUESTIONS):
        counts = Counter(p.fact(rel) for p in members)
        rates[rel] = round(counts.most_common(1)[0][1] / len(members), 4) if members else 0.0
    return rates


def write_data(spec: WorldSpec, persons: list[Person], data_dir: Path) -> None:
    """Write the JSONL files and ``world.json`` (spec, counts, forget base rates) into ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    files = data_files(spec, persons)
    for name, rows in files.items():
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        (data_dir / f"{name}.jsonl").write_text(lines, encoding="utf-8")
    meta = {
        "spec": spec.to_dict(),
        "fingerprint": spec.fingerprint(),
        "recipe_version": RECIPE_VERSION,
        "prompt_format": t.PROMPT_FORMAT,
        "counts": {name: len(rows) for name, rows in files.items()},
        "persons": {split: len(split_persons(persons, split)) for split in SPLITS},
        "forget_base_rates": base_rates(persons, "forget"),
    }
    (data_dir / "world.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
