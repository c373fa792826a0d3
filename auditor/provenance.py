"""The code a cached result came from, for its key: a plugin's source and every first-party module it imports.

A cached piece, attack or unlearned model is keyed by ``code_digest`` of the classes that computed it, so an
edit to a probe recomputes that probe's cells and nothing else, and an upgrade of the package recomputes what
changed in it. The first-party modules are the package's own (``auditor``, ``attacks``, ``probes``, ``reports``)
and the top-level package of a plugin from elsewhere; the versions of the numeric libraries are keyed beside.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

FIRST_PARTY = ("auditor", "attacks", "probes", "reports")
NUMERIC_LIBRARIES = ("torch", "transformers", "peft")


@functools.cache
def _source_file(module: str) -> Path | None:
    loaded = sys.modules.get(module)
    origin = getattr(loaded, "__file__", None)
    if origin is None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec else None
    return Path(origin) if origin and origin.endswith(".py") else None


def _is_module(name: str) -> bool:
    return _source_file(name) is not None


@functools.cache
def _imported(module: str) -> frozenset[str]:
    """The first-party modules (and those of ``module``'s own package) that ``module`` imports, at the top or in a
    function (``from package import module`` included)."""
    path = _source_file(module)
    if path is None:
        return frozenset()
    ours = {*FIRST_PARTY, module.split(".")[0]}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            if base.split(".")[0] in ours:
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}"))
    return frozenset(name for name in names if name.split(".")[0] in ours)


def code_digest(cls: type) -> str:
    """sha256 (16 hex digits) of the source of ``cls``'s module, its bases' modules and every first-party module
    they import, directly or not."""
    excluded = sys.stdlib_module_names | {"builtins"}
    return _modules_digest(frozenset(c.__module__ for c in cls.__mro__ if c.__module__ not in excluded))


@functools.cache
def _modules_digest(starts: frozenset[str]) -> str:
    roots = set(FIRST_PARTY) | {name.split(".")[0] for name in starts}
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        module = todo.pop()
        if module in seen or module.split(".")[0] not in roots:
            continue
        seen.add(module)
        todo.extend(_imported(module))
    digest = hashlib.sha256()
    for module in sorted(seen):
        path = _source_file(module)
        if path is not None:
            digest.update(module.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def runtime_versions(*extra: str) -> dict[str, str]:
    """Installed versions of the numeric libraries (and of ``extra`` distributions): "missing" when absent."""

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "missing"

    return {name: installed(name) for name in (*NUMERIC_LIBRARIES, *extra)}
