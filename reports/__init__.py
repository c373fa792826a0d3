"""Renderers: results.json -> HTML, JUnit XML, Markdown. Imports auditor.types and jinja2 only, never torch."""
