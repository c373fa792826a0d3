"""The results.json schema (JSON Schema draft 2020-12) and its validation."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from auditor.errors import UserError

SCHEMA_VERSION = "1.3"
_MAX_SHOWN = 5


class ResultsError(UserError):
    """A results file that does not match the schema this version reads."""


@cache
def schema() -> dict[str, Any]:
    """The schema as a dict (``reports/schema.json``)."""
    return json.loads(resources.files("reports").joinpath("schema.json").read_text(encoding="utf-8"))


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def _where(error: ValidationError) -> str:
    where = ""
    for part in error.absolute_path:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    return where or "(top level)"


def validate_results(results: Any) -> None:
    """Raise ``ResultsError`` naming every place (up to five) where ``results`` breaks the schema."""
    if not isinstance(results, dict):
        raise ResultsError(f"invalid results: expected a JSON object, got {type(results).__name__}")
    version = results.get("schema_version")
    if isinstance(version, str) and version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ResultsError(f"unsupported results schema_version {version!r}: this unlearn-audit reads {SCHEMA_VERSION}")
    errors = sorted(_validator().iter_errors(results), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if not errors:
        return
    shown = "; ".join(f"{_where(e)}: {e.message}" for e in errors[:_MAX_SHOWN])
    more = f" (and {len(errors) - _MAX_SHOWN} more)" if len(errors) > _MAX_SHOWN else ""
    raise ResultsError(f"invalid results (schema {SCHEMA_VERSION}): {shown}{more}")
