"""One small typed registry: names map to lazy ``"module:Class"`` entries.

Built-in entries are listed in each plugin package's ``ENTRIES`` dict
(``attacks``, ``probes``, ``auditor.unlearning``); other distributions add
theirs through the entry-point groups ``unlearn_audit.attacks``,
``unlearn_audit.probes`` and ``unlearn_audit.methods``. Nothing is imported
until it is asked for, so ``--help`` and ``list`` stay fast and a missing
optional backend only hurts its own entry.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from auditor.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Lazy name -> class lookup for one kind of plugin."""

    def __init__(self, kind: str, builtin_module: str, entry_point_group: str):
        self.kind = kind
        self._builtin_module = builtin_module
        self._group = entry_point_group
        self._entries: dict[str, str] | None = None

    def _load_entries(self) -> dict[str, str]:
        if self._entries is None:
            entries = dict(importlib.import_module(self._builtin_module).ENTRIES)
            for ep in entry_points(group=self._group):
                entries.setdefault(ep.name, ep.value)
            self._entries = entries
        return self._entries

    def names(self) -> list[str]:
        return sorted(self._load_entries())

    def __contains__(self, name: str) -> bool:
        return name in self._load_entries()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; unknown names get the close matches."""
        entries = self._load_entries()
        if name not in entries:
            close = difflib.get_close_matches(name, entries, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(close)}?)" if close else f" (known: {', '.join(sorted(entries))})"
            raise UserError(f"unknown {self.kind} {name!r}{hint}")
        module_name, _, attr = entries[name].partition(":")
        return getattr(importlib.import_module(module_name), attr)


ATTACKS: Registry = Registry("attack", "attacks", "unlearn_audit.attacks")
PROBES: Registry = Registry("probe", "probes", "unlearn_audit.probes")
METHODS: Registry = Registry("unlearning method", "auditor.unlearning", "unlearn_audit.methods")
