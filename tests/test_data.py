"""Item sets: presets of TOFU / MUSE / WMDP, field mapping, and validation messages with line numbers."""

from __future__ import annotations

import json

import pytest

from auditor.data import load_items, parse_mapping
from auditor.errors import UserError


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_tofu_fields(tmp_path):
    rows = [
        {"question": "Q1?", "answer": "A1", "paraphrased_answer": "a1", "perturbed_answer": ["B", "C"]},
        {"question": "Q2?", "answer": "A2", "paraphrased_answer": "a2", "perturbed_answer": ["D"]},
    ]
    items = load_items(write_jsonl(tmp_path / "f.jsonl", rows), "forget")
    assert items.kind == "qa" and len(items) == 2
    assert items.items[0].perturbed_answers == ("B", "C") and items.items[1].paraphrased_answer == "a2"


def test_muse_and_wmdp_presets(tmp_path):
    verbmem = load_items(write_jsonl(tmp_path / "v.jsonl", [{"prompt": "Once upon", "gt": " a time"}]), "texts")
    assert verbmem.items[0].question == "Once upon" and verbmem.items[0].answer == " a time"
    privleak = load_items(write_jsonl(tmp_path / "p.jsonl", [{"text": "some passage"}]), "texts", kind="text")
    assert privleak.kind == "text"
    wmdp = load_items(write_jsonl(tmp_path / "w.jsonl", [{"question": "Q?", "choices": ["a", "b"], "answer": 1}]), "w")
    assert wmdp.kind == "choice" and wmdp.items[0].answer_index == 1


def test_csv_and_mapping(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("q,a\nWho?,Me\nWhere?,Here\n")
    items = load_items(path, "forget", parse_mapping("question=q,answer=a"))
    assert [i.answer for i in items.items] == ["Me", "Here"]
    path.write_text("q,a\nWho?,Me\nWhere?,\n")
    with pytest.raises(UserError, match=r"f\.csv:3: missing field"):
        load_items(path, "forget", parse_mapping("question=q,answer=a"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "Q", "answer": "A"}\n{"question": "Q2"}\n', r"f\.jsonl:2: missing field"),
        ('{"question": "Q", "answer": "A"}\n\n{not json}\n', r"f\.jsonl:3: not valid JSON"),
        ('{"question": "Q", "answer": "A", "perturbed_answer": 3}\n', r"f\.jsonl:1: field 'perturbed_answer'"),
        ('["a list"]\n', r"f\.jsonl:1: expected a JSON object"),
        ("", r"no items"),
    ],
)
def test_validation_names_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "f.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_items(path, "forget")


def test_missing_file_and_fingerprint_stability(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_items(tmp_path / "nope.jsonl", "forget")
    rows = [{"question": "Q", "answer": "A"}]
    a = load_items(write_jsonl(tmp_path / "a.jsonl", rows), "forget")
    b = load_items(write_jsonl(tmp_path / "b.jsonl", rows), "forget")
    assert a.fingerprint == b.fingerprint
