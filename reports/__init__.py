"""Renderers: results.json -> HTML, JUnit XML, Markdown. Imports jinja2 and torch-free auditor modules, never torch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from auditor.errors import UserError
from auditor.files import atomic_write
from reports.html import render_html
from reports.junit import render_junit
from reports.markdown import render_markdown
from reports.schema import validate_results

FILES: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "html": ("report.html", render_html),
    "junit": ("junit.xml", render_junit),
    "markdown": ("summary.md", render_markdown),
}


def write_reports(
    results: dict[str, Any], out_dir: Path, formats: Iterable[str] = ("html", "junit", "markdown")
) -> dict[str, Path]:
    """Render ``results`` in each format into ``out_dir``; returns the written paths by format."""
    formats = list(formats)
    unknown = [f for f in formats if f not in FILES]
    if unknown:
        raise UserError(f"unknown report format(s) {', '.join(unknown)}: choose from {', '.join(FILES)}")
    validate_results(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in formats:
        filename, render = FILES[name]
        atomic_write(out_dir / filename, render(results))
        written[name] = out_dir / filename
    return written
