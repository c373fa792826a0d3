"""JUnit XML for CI: one testcase per gated cell, plus collateral damage, the baseline and the gate."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from reports.schema import validate_results
from reports.text import fmt, fmt_ci, visible
from reports.view import attack_ids, judge, probe_names


def _case(suite: ET.Element, classname: str, name: str, kind: str, message: str, detail: str = "") -> None:
    case = ET.SubElement(suite, "testcase", classname=visible(classname), name=visible(name), time="0")
    if kind == "failed":
        failure = ET.SubElement(case, "failure", message=visible(message), type="unlearn-audit")
        failure.text = visible(detail or message)
    elif kind in ("skipped", "inconclusive"):
        ET.SubElement(case, "skipped", message=visible(f"{kind}: {message}" if kind == "inconclusive" else message))
    else:
        ET.SubElement(case, "system-out").text = visible(message)


def _cell_detail(cell: dict[str, Any]) -> str:
    keys = ("k_original", "k_unlearned", "k_reference", "k_reference_attacked")
    ks = ", ".join(f"{key} {fmt(cell.get(key))}" for key in keys)
    ci = fmt_ci(cell.get("ci_low"), cell.get("ci_high"))
    note = f"\nnote: {cell['note']}" if cell.get("note") else ""
    return f"residual {fmt(cell.get('residual'))} {ci}\n{ks}\nn_items {cell['n_items']}, status {cell['status']}{note}"


def _summary_cases(suite: ET.Element, results: dict[str, Any]) -> None:
    """The cases beside the cells: collateral damage, the baseline comparison and the gate itself."""
    collateral = results.get("collateral")
    if collateral:
        message = (
            f"relative drop {fmt(collateral['drop'])} {fmt_ci(collateral.get('ci_low'), collateral.get('ci_high'))}"
            f" against the limit {fmt(collateral['limit'])}"
        )
        _case(suite, "collateral", collateral["probe"], "failed" if collateral["failed"] else "passed", message)
    baseline = results.get("baseline")
    if baseline:
        lines = baseline.get("regressions") or []
        message = f"against {baseline['source']}: " + (
            "no regression" if baseline["passed"] else "; ".join(lines) or "regressed"
        )
        _case(suite, "baseline", "comparison", "passed" if baseline["passed"] else "failed", message, "\n".join(lines))
    verdict = results["verdict"]
    failures = verdict.get("failures") or []
    gate_message = f"verdict {verdict['label']}" + (": " + "; ".join(failures) if failures else "")
    passed = "passed" if verdict["gate_passed"] else "failed"
    _case(suite, "gate", "verdict", passed, gate_message, "\n".join(verdict.get("reasons", []) + failures))


def render_junit(results: dict[str, Any]) -> str:
    """The audit as a JUnit XML document (a ``testsuites`` root with one ``testsuite``)."""
    validate_results(results)
    verdict = results["verdict"]
    suite = ET.Element("testsuite", name="unlearn-audit", timestamp=visible(results["created"]))
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("verdict", verdict["label"]),
        ("gate_passed", str(verdict["gate_passed"]).lower()),
        ("controlled", str(results["controlled"]).lower()),
        ("command", results["command"]),
    ):
        ET.SubElement(props, "property", name=key, value=visible(value))
    order = {(a, p): (i, j) for i, a in enumerate(attack_ids(results)) for j, p in enumerate(probe_names(results))}
    for cell in sorted(results["cells"], key=lambda c: order.get((c["attack"], c["probe"]), (0, 0))):
        judgement = judge(results, cell)
        _case(suite, cell["attack"], cell["probe"], judgement.kind, judgement.message, _cell_detail(cell))
    _summary_cases(suite, results)
    cases = suite.findall("testcase")
    counts = {
        "tests": str(len(cases)),
        "failures": str(sum(c.find("failure") is not None for c in cases)),
        "errors": "0",
        "skipped": str(sum(c.find("skipped") is not None for c in cases)),
    }
    seconds = (results.get("timings") or {}).get("total_seconds")
    suite.attrib.update(counts, time=f"{seconds or 0:g}")
    root = ET.Element("testsuites", {"name": "unlearn-audit", **counts})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
