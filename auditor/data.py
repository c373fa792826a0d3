"""Item sets from local files (or the hub) through ``datasets``, with presets and validation.

Field names of TOFU (``question``, ``answer``, ``paraphrased_answer``,
``perturbed_answer``), MUSE (knowmem ``question``/``answer``; verbmem
``prompt``/``gt``; privleak ``text``) and WMDP (``question``, ``choices``,
``answer`` as an index) are recognised without a mapping. Any other layout
takes a mapping ``{our_field: their_column}``. Problems name the file, the line
(JSON Lines, CSV) or row, and the field.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from auditor.errors import UserError
from auditor.types import AuditData, Item, ItemSet

LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
STRING_FIELDS = ("question", "answer", "text", "paraphrased_answer", "paraphrased_question", "group", "relation")
KNOWN_FIELDS = {*STRING_FIELDS, "id", "choices", "answer_index", "perturbed_answer", "prompt", "gt"}
MAPPABLE = {*STRING_FIELDS, "id", "choices", "answer_index", "perturbed_answer"}
REQUIRED_TEXT = ("question", "answer", "text")  # present, they must say something: an empty answer is in every output


def _read_rows(source: str) -> tuple[list[dict[str, Any]], str]:
    """Rows of a local file or hub dataset, and how to name a row in messages."""
    path = Path(source).expanduser()
    if path.is_file():
        loader = LOADERS.get(path.suffix.lower())
        if loader is None:
            raise UserError(f"{source}: unsupported file type (use .jsonl, .json, .csv or .parquet)")
        if path.stat().st_size == 0 or not path.read_bytes().strip():
            raise UserError(f"{source}: no items (the file is empty)")
        if loader == "json":
            _check_json_lines(path)
        data_files = str(path)
    elif path.exists() or source.startswith((".", "/", "~")) or "/" not in source:
        raise UserError(f"data file not found: {source}")
    else:
        loader, data_files = source, None
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        if data_files is None:
            dataset = datasets.load_dataset(loader, split="train")
        else:
            dataset = datasets.load_dataset(loader, data_files=data_files, split="train")
    except Exception as exc:  # datasets raises many types for unreadable input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{source}: cannot read: {first}") from None
    return [dict(row) for row in dataset], path.suffix.lower() if data_files else "hub"


def _check_json_lines(path: Path) -> None:
    """Point at the first line that is not a JSON object (datasets' own errors do not)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")


def _row_label(source: str, style: str, index: int, line_numbers: list[int] | None) -> str:
    if style == ".jsonl" and line_numbers:
        return f"{source}:{line_numbers[index]}"
    if style == ".csv":
        return f"{source}:{index + 2}"
    return f"{source}: row {index + 1}"


def _jsonl_line_numbers(source: str) -> list[int]:
    lines = Path(source).expanduser().read_text(encoding="utf-8", errors="replace").splitlines()
    return [n for n, line in enumerate(lines, start=1) if line.strip()]


def _preset(columns: set[str]) -> dict[str, str]:
    """The mapping implied by well-known column names."""
    if {"prompt", "gt"} <= columns:  # MUSE verbmem: prefix and true continuation
        return {"question": "prompt", "answer": "gt"}
    if {"question", "choices", "answer"} <= columns:  # WMDP
        return {"answer_index": "answer"}
    return {}


def _kind(fields: dict[str, Any]) -> str:
    if fields.get("choices"):
        return "choice"
    if fields.get("question") is not None and fields.get("answer") is not None:
        return "qa"
    if fields.get("text") is not None:
        return "text"
    return "unknown"


def _to_item(row: dict[str, Any], mapping: dict[str, str], label: str, index: int, name: str) -> Item:
    fields = {ours: row.get(theirs) for ours, theirs in mapping.items()}
    for ours in MAPPABLE:
        if ours not in mapping and ours in row and ours not in mapping.values():
            fields[ours] = row[ours]
    for key in STRING_FIELDS:
        value = fields.get(key)
        if value is not None and not isinstance(value, str):
            if key in ("answer", "group") and isinstance(value, int | float):
                fields[key] = str(value)
            else:
                raise UserError(f"{label}: field {mapping.get(key, key)!r} must be a string")
        text = fields.get(key)
        if key in REQUIRED_TEXT and isinstance(text, str) and not text.strip():
            raise UserError(f"{label}: field {mapping.get(key, key)!r} is empty")
    perturbed = fields.get("perturbed_answer")
    if isinstance(perturbed, str):
        perturbed = [perturbed]
    if perturbed is not None and not (isinstance(perturbed, list) and all(isinstance(p, str) for p in perturbed)):
        raise UserError(f"{label}: field 'perturbed_answer' must be a string or a list of strings")
    choices = fields.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        raise UserError(f"{label}: field 'choices' must be a list of strings")
    answer_index = fields.get("answer_index")
    if choices and not (isinstance(answer_index, int) and 0 <= answer_index < len(choices)):
        raise UserError(f"{label}: field 'answer' must be an index into 'choices'")
    extra = {k: v for k, v in row.items() if k not in KNOWN_FIELDS and k not in mapping.values()}
    raw_id = fields.get("id")
    return Item(
        id=str(raw_id) if raw_id is not None else f"{name}-{index}",
        question=fields.get("question"),
        answer=fields.get("answer"),
        text=fields.get("text"),
        choices=tuple(choices or ()),
        answer_index=answer_index if choices else None,
        paraphrased_answer=fields.get("paraphrased_answer"),
        perturbed_answers=tuple(perturbed or ()),
        paraphrased_question=fields.get("paraphrased_question"),
        group=fields.get("group"),
        relation=fields.get("relation"),
        extra=extra,
    )


def fingerprint_items(items: tuple[Item, ...]) -> str:
    """sha256 over the items' content, independent of where they were read from."""
    digest = hashlib.sha256()
    for item in items:
        record = {k: getattr(item, k) for k in Item.__dataclass_fields__ if k != "extra"}
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False, default=list).encode())
    return digest.hexdigest()


def load_items(
    source: str | Path, name: str, mapping: dict[str, str] | None = None, kind: str | None = None
) -> ItemSet:
    """Read ``source`` into an ``ItemSet`` called ``name``; ``kind`` requires qa, text or choice."""
    source = str(source)
    rows, style = _read_rows(source)
    if not rows:
        raise UserError(f"{source}: no items")
    unknown = [ours for ours in (mapping or {}) if ours not in MAPPABLE]
    if unknown:
        raise UserError(f"field mapping: unknown field {unknown[0]!r} (known: {', '.join(sorted(MAPPABLE))})")
    columns = set(rows[0])
    full_mapping = {**_preset(columns), **(mapping or {})}
    missing_columns = [theirs for theirs in full_mapping.values() if theirs not in columns]
    if missing_columns:
        raise UserError(f"{source}: no column {missing_columns[0]!r} (columns: {', '.join(sorted(columns))})")
    line_numbers = _jsonl_line_numbers(source) if style == ".jsonl" else None
    items, kinds = [], set()
    for index, row in enumerate(rows):
        label = _row_label(source, style, index, line_numbers)
        item = _to_item(row, full_mapping, label, index, name)
        item_kind = _kind(item.__dict__)
        if item_kind == "unknown" or (kind is not None and item_kind != kind and not (kind == "text" and item.text)):
            want = {"qa": "'question' and 'answer'", "text": "'text'", "choice": "'question' and 'choices'"}
            need = want.get(kind or "qa", "'question' and 'answer'")
            raise UserError(f"{label}: missing field: a {name} item needs {need}")
        kinds.add(item_kind)
        items.append(item)
    if len(kinds) > 1:
        raise UserError(f"{source}: mixes item kinds ({', '.join(sorted(kinds))}); use one kind per file")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise UserError(f"{source}: duplicate item ids")
    first: dict[tuple, int] = {}
    for index, item in enumerate(items):
        seen = first.setdefault(_content(item), index)
        if seen != index:
            labels = [_row_label(source, style, i, line_numbers) for i in (index, seen)]
            raise UserError(f"{labels[0]}: repeats {labels[1]} (the same item twice would count twice)")
    frozen = tuple(items)
    return ItemSet(name, kind or kinds.pop(), frozen, source, fingerprint_items(frozen))  # type: ignore[arg-type]


def _content(item: Item) -> tuple:
    """What makes two items the same item, whatever their ids."""
    return (item.question, item.answer, item.text, item.choices, item.answer_index)


def _question(item: Item) -> str | None:
    """An item's question (or text), normalised for comparing sets."""
    value = item.question or item.text
    return " ".join(value.lower().split()) if value else None


def check_disjoint(first: ItemSet, second: ItemSet, why: str) -> None:
    """Refuse two sets that share a question (or text) or a subject: ``why`` says why they must not."""
    questions = {question for item in first.items if (question := _question(item))}
    for item in second.items:
        if _question(item) in questions:
            raise UserError(
                f"{first.source} and {second.source} share the item {(item.question or item.text)!r}: {why}"
            )
    subjects = sorted({i.group for i in first.items if i.group} & {i.group for i in second.items if i.group})
    if subjects:
        more = f" and {len(subjects) - 1} more" if len(subjects) > 1 else ""
        raise UserError(f"{first.source} and {second.source} share the subject {subjects[0]!r}{more}: {why}")


def parse_mapping(text: str | None) -> dict[str, str] | None:
    """``"question=q,answer=a"`` -> ``{"question": "q", "answer": "a"}``."""
    if not text:
        return None
    mapping = {}
    for part in text.split(","):
        ours, sep, theirs = part.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise UserError(f"bad field mapping {text!r}: expected ours=theirs,...")
        mapping[ours.strip()] = theirs.strip()
    return mapping


def load_audit_data(
    forget: str,
    retain: str,
    *,
    holdout: str | None = None,
    multihop: str | None = None,
    forget_texts: str | None = None,
    holdout_texts: str | None = None,
    unrelated: str | None = None,
    mapping: dict[str, str] | None = None,
    disjoint: bool = True,
) -> AuditData:
    """Read every item set of an audit; the mapping applies to the QA files. Unless told not to (``disjoint``:
    a command that fills a set it was not given with another), sets that must not share items are checked."""

    def optional(source: str | None, name: str, kind: str | None = None) -> ItemSet | None:
        return load_items(source, name, mapping if kind != "text" else None, kind) if source else None

    data = AuditData(
        forget=load_items(forget, "forget", mapping),
        retain=load_items(retain, "retain", mapping),
        holdout=optional(holdout, "holdout"),
        multihop=optional(multihop, "multihop", "qa"),
        forget_texts=optional(forget_texts, "forget_texts", "text"),
        holdout_texts=optional(holdout_texts, "holdout_texts", "text"),
        unrelated=optional(unrelated, "unrelated", "text"),
    )
    if not disjoint:
        return data
    check_disjoint(data.forget, data.retain, "an item or subject is either forgotten or kept")
    pairs = ((data.forget, data.holdout), (data.forget_texts, data.holdout_texts), (data.forget, data.holdout_texts))
    for forgotten, held in pairs:
        if forgotten is not None and held is not None:
            check_disjoint(forgotten, held, "the holdout set holds what no model saw")
    return data


def sample_items(items: ItemSet, size: int, seed: int) -> ItemSet:
    """A fixed random sample of ``size`` items, in their order (all of them when fewer)."""
    if len(items) <= size:
        return items
    rng = random.Random(seed)
    picked = tuple(items.items[i] for i in sorted(rng.sample(range(len(items)), size)))
    return ItemSet(f"{items.name}-sample", items.kind, picked, items.source, fingerprint_items(picked))
