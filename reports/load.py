"""Read and validate a results.json file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reports.schema import ResultsError, validate_results


def load_results(path: str | Path) -> dict[str, Any]:
    """The validated results in ``path`` (a results.json file, or the audit directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"no results file at {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsError(f"cannot read {path}: {error}") from None
    try:
        results = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path} is not JSON: {error.msg} at line {error.lineno}, column {error.colno}") from None
    validate_results(results)
    return results
