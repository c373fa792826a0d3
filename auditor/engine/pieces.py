"""Finished pieces of an audit on disk: probe results and attack records, keyed by what they depend on.

A piece is written atomically once it is finished, so a killed run leaves only whole pieces, and a
resumed or repeated run reuses every one whose inputs (model fingerprints, attack, seed, probe, the code of
both, data, prompt format) are the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from auditor.files import write_json_atomic
from auditor.types import AttackResult, ItemScore, ProbeResult, VariantRecord


def _probe_result(raw: dict) -> ProbeResult:
    items = tuple(ItemScore(**item) for item in raw.pop("items"))
    return ProbeResult(items=items, **raw)


def _attack_result(raw: dict) -> AttackResult:
    raw["variants"] = tuple(
        VariantRecord(v["name"], v["fingerprint"], tuple(v["trained_groups"])) for v in raw.get("variants", ())
    )
    return AttackResult(**raw)


class PieceStore:
    """Finished probe results (and the small records of the attacks behind them) under ``root/pieces``."""

    def __init__(self, root: Path | None):
        self.root = root / "pieces" if root else None
        self.computed = 0
        self.reused = 0

    @staticmethod
    def key(parts: dict) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def has(self, key: str) -> bool:
        return self.root is not None and (self.root / f"{key}.json").is_file()

    def get_or_compute(self, key: str, compute: Callable[[], ProbeResult]) -> ProbeResult:
        if self.root is not None and self.has(key):
            self.reused += 1
            return _probe_result(json.loads((self.root / f"{key}.json").read_text()))
        result = compute()
        self.computed += 1
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.root / f"{key}.json", asdict(result))
        return result

    # Attack records are small; they are kept beside the pieces so that a resumed run can report an
    # attack without running it again.
    def _record_path(self, attack_spec: str, code: str, seed: int, fingerprint: str) -> Path | None:
        if self.root is None:
            return None
        parts = {"attack": attack_spec, "code": code, "seed": seed, "model": fingerprint}
        return self.root / f"attack-{self.key(parts)}.json"

    def put_attack_record(self, attack_spec: str, code: str, seed: int, fingerprint: str, result: AttackResult) -> None:
        path = self._record_path(attack_spec, code, seed, fingerprint)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, asdict(result))

    def attack_record(self, attack_spec: str, code: str, seed: int, fingerprint: str) -> AttackResult | None:
        path = self._record_path(attack_spec, code, seed, fingerprint)
        if path is None or not path.is_file():
            return None
        return _attack_result(json.loads(path.read_text()))
