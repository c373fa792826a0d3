"""Phases of a run timed: one timestamped line per finished phase, and the seconds of each for results.json.

A phase nested in another (an attack run on demand by the first probe of the
attacked model) is reported on its own line, and its time is not counted again
in the enclosing phase. Each phase also records the peak resident memory of its
span, nested phases included (``auditor.lm.memory`` windows; ``None`` where the
system cannot reset the peak).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TypeVar

from auditor.lm.ledger import KINDS, BareRates, tokens_now
from auditor.lm.memory import reset_window, window_peak

T = TypeVar("T")


@dataclass
class Phase:
    """One finished phase: its seconds (without nested phases), whether its output came from a cache, and the
    peak resident memory in MB while it ran."""

    phase: str
    seconds: float = 0.0
    reused: bool = False
    peak_rss_mb: float | None = None
    tokens: dict[str, int] | None = None  # pushed through a model, by kind (``auditor.lm.ledger``), nested excluded
    worker: str | None = None  # host:pid of the worker process that ran it; None: this process


def _clock_time() -> str:
    return time.strftime("%H:%M:%S")


class PhaseRecorder:
    """Times phases, logs ``[HH:MM:SS] NAME: 3.2 s`` as each ends, and keeps every phase in order."""

    def __init__(
        self,
        log: Callable[[str], None] = lambda _: None,
        clock: Callable[[], float] = time.perf_counter,
        stamp: Callable[[], str] = _clock_time,
    ):
        self.log, self.clock, self.stamp = log, clock, stamp
        self.phases: list[Phase] = []
        self._nested: list[float] = []  # per open phase: seconds spent in the phases nested in it
        self._peaks: list[int] = []  # per open phase: its peak memory (bytes) before a nested phase's window
        self._nested_tokens: list[dict[str, int]] = []  # per open phase: tokens of the phases nested in it
        self.bare: BareRates | None = None  # the model's bare throughput, once measured

    def _say(self, text: str) -> None:
        self.log(f"[{self.stamp()}] {text}")

    @contextmanager
    def phase(self, name: str, announce: bool = False) -> Iterator[Phase]:
        """Time the body as phase ``name``; the body may mark it ``reused``. ``announce``: a line when it starts too.

        A phase whose body raises is neither logged nor kept.
        """
        if announce:
            self._say(f"{name} ...")
        record = Phase(name)
        if self._peaks:
            self._peaks[-1] = max(self._peaks[-1], window_peak() or 0)
        windowed = reset_window()
        start, tokens_before = self.clock(), tokens_now()
        self._nested.append(0.0)
        self._peaks.append(0)
        self._nested_tokens.append(dict.fromkeys(KINDS, 0))
        try:
            yield record
        finally:
            nested = self._nested.pop()
            earlier = self._peaks.pop()
            nested_tokens = self._nested_tokens.pop()
        elapsed = self.clock() - start
        spent = {k: v - tokens_before[k] for k, v in tokens_now().items()}
        if self._nested_tokens:
            for kind in KINDS:
                self._nested_tokens[-1][kind] += spent[kind]
        record.tokens = {kind: spent[kind] - nested_tokens[kind] for kind in KINDS}
        peak = window_peak() if windowed else None
        record.peak_rss_mb = round(max(earlier, peak) / 2**20, 1) if peak is not None else None
        if self._nested:
            self._nested[-1] += elapsed
        record.seconds = elapsed - nested
        self.phases.append(record)
        self._say(f"{name}: {record.seconds:.1f} s" + (" (reused)" if record.reused else ""))

    def timed(self, name: str, func: Callable[[], T]) -> Callable[[], T]:
        """``func`` run as phase ``name`` when called (for work done only when a cache misses)."""

        def run() -> T:
            with self.phase(name):
                return func()

        return run

    @contextmanager
    def held(self) -> Iterator[None]:
        """Log the lines of the body's phases when it ends; drop them if it raises (its error is then the only line)."""
        log, lines = self.log, list[str]()
        self.log = lines.append
        try:
            yield
        finally:
            self.log = log
        for line in lines:
            log(line)

    def to_json(self) -> list[dict]:
        """The finished phases in order, seconds rounded to milliseconds, memory in MB, and with the bare
        throughput measured: ``x_bare``, the phase's seconds over what its tokens would take at the bare rates."""

        def row(p: Phase) -> dict:
            bare_seconds = self.bare.seconds(p.tokens) if self.bare is not None and p.tokens else 0.0
            x_bare = round(p.seconds / bare_seconds, 2) if bare_seconds > 0 else None
            return {**asdict(p), "seconds": round(p.seconds, 3), "x_bare": x_bare}

        return [row(p) for p in self.phases]
