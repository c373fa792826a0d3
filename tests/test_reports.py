"""Reports: schema, escaping of hostile model output (text and in headless Chromium), JUnit, Markdown, index."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from auditor.errors import UserError
from reports import write_reports
from reports.charts import residual_colour
from reports.html import render_html
from reports.index import render_index
from reports.junit import render_junit
from reports.load import load_results
from reports.markdown import md_code, render_markdown, write_step_summary
from reports.schema import ResultsError, validate_results
from reports.text import show, visible
from reports.view import attack_ids, judge, policy, probe_names

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "results-example.json"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
PAYLOADS = [
    "<script>alert(1)</script>",
    "</script>",
    "<img src=x onerror=alert(1)>",
    "[click me](javascript:alert(1))",
    "{{ 7*7 }}",
    "<script>document.title='XSS'</script>",
    "<img src=x onerror=\"document.title='XSS2'\">",
]
HOSTILE = " ".join(PAYLOADS) + " \x1b[31mred\x1b[0m nul\x00 rtl\u202e lone\ud800 end"


@pytest.fixture
def example() -> dict:
    """A real audit's results (``make results-example`` regenerates them); assertions read their figures."""
    return json.loads(EXAMPLE.read_text())


def cell_of(results: dict, attack: str, probe: str) -> dict:
    return next(c for c in results["cells"] if (c["attack"], c["probe"]) == (attack, probe))


def deciding_cell(results: dict) -> dict:
    return cell_of(results, *results["verdict"]["deciding_cells"][0])


def skipped_cells(results: dict) -> list[dict]:
    return [c for c in results["cells"] if c["status"] in {"skipped", "fallback"}]


def interval(cell: dict) -> str:
    return f"[{cell['ci_low']:.2f}, {cell['ci_high']:.2f}]"


def test_example_is_a_real_audit_with_every_kind_of_cell(example):
    """What the report tests below rely on: the regenerated example still shows each outcome."""
    assert example["command"].startswith("unlearn-audit audit ") and example["controlled"]
    outcomes = {c["outcome"] for c in example["cells"]}
    assert {"unclear", "recovered", "underpowered", "skipped"} <= outcomes  # clean cells: a synthetic test below
    assert example["curves"] and example["recovered_items"] and example["statistics"]["resampling"] == "subjects"
    assert any("roc" in s["extras"] for s in example["scores"])


def hostile_results() -> dict:
    """The example with attacker-controlled text in every field a model or user can fill."""
    results = json.loads(EXAMPLE.read_text())
    evil_id = "evil<script>alert(1)</script>"
    results["attacks"].append(
        {
            "id": evil_id,
            "attack": "evil",
            "params": {"p": HOSTILE},
            "status": "skipped",
            "reason": HOSTILE,
            "applied": {},
            "cost": {},
            "summary": HOSTILE,
        }
    )
    results["cells"].append({**skipped_cells(results)[0], "attack": evil_id, "note": HOSTILE})
    results["verdict"]["reasons"].append(HOSTILE)
    results["command"] += " --note " + HOSTILE
    results["models"]["unlearned"]["spec"] = "runs/<b>u</b>"
    attack, probe = results["verdict"]["deciding_cells"][0]
    results["recovered_items"].append(
        {
            "attack": attack,
            "probe": probe,
            "item_id": HOSTILE,
            "prompt": HOSTILE,
            "expected": HOSTILE,
            "outputs": {"original": HOSTILE, "unlearned": HOSTILE, "attacked": HOSTILE, "reference_attacked": HOSTILE},
        }
    )
    return results


class Tags(HTMLParser):
    """Every start tag with its attributes, the title, and the page's text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.title = ""
        self._in_title = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title" and not self.title

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_title:
            self.title += data


def assert_inert(html: str) -> Tags:
    """No script, no event handler, no external or scripted link; returns the parsed page."""
    page = Tags(html)
    for tag, attrs in page.tags:
        assert tag not in {"script", "iframe", "object", "embed", "img", "link", "base", "form"}, tag
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, value)
            if name in {"href", "src", "xlink:href", "action"}:
                assert value and (value.startswith("#") or not re.match(r"^[a-z][a-z0-9+.-]*:|^//", value)), value
    assert re.search(r"<[^>]*\bon\w+\s*=", html) is None
    return page


# ---- schema and loading


def test_example_validates_and_loads(example, tmp_path):
    validate_results(example)
    (tmp_path / "results.json").write_text(json.dumps(example))
    assert load_results(tmp_path)["verdict"]["label"] == "HIDDEN"
    assert load_results(tmp_path / "results.json") == example


def test_broken_results_fail_with_clear_messages(example):
    missing = copy.deepcopy(example)
    del missing["verdict"]
    with pytest.raises(ResultsError, match=r"\(top level\): 'verdict' is a required property"):
        validate_results(missing)
    bad_label = copy.deepcopy(example)
    bad_label["verdict"]["label"] = "MAYBE"
    with pytest.raises(ResultsError, match=r"verdict\.label: 'MAYBE' is not one of"):
        validate_results(bad_label)
    bad_cell = copy.deepcopy(example)
    bad_cell["cells"][1]["status"] = "done"
    bad_cell["cells"][0]["residual"] = "0.3"
    with pytest.raises(ResultsError) as info:
        validate_results(bad_cell)
    assert "cells[0].residual" in str(info.value) and "cells[1].status" in str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)
    unknown = copy.deepcopy(example)
    unknown["cells"][0]["residul"] = 0.3  # a misspelt key is an error, not silently ignored
    with pytest.raises(ResultsError, match=r"cells\[0\]: Additional properties are not allowed \('residul'"):
        validate_results(unknown)
    future = copy.deepcopy(example)
    future["schema_version"] = "2.0"
    with pytest.raises(ResultsError, match="unsupported results schema_version '2.0'"):
        validate_results(future)


def test_load_reports_bad_json_with_position(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text('{"schema_version": "1.0",\n  "tool": }')
    with pytest.raises(ResultsError, match="line 2"):
        load_results(bad)
    with pytest.raises(ResultsError, match="no results file"):
        load_results(tmp_path / "missing.json")


# ---- text helpers


def test_visible_and_show_mark_control_characters():
    assert visible("a\x1b[31mb\tc\nd\x00\u202e\ud800") == "a\\x1b[31mb\tc\nd\\x00\\u202e\\ud800"
    shown = str(show("<b>\x1b</b>"))
    assert shown == '&lt;b&gt;<span class="ctl">\\x1b</span>&lt;/b&gt;'
    assert md_code("a`b|c\nd") == "`aˋb\\|c⏎d`"


# ---- HTML


def test_html_escapes_hostile_text(tmp_path):
    html = render_html(hostile_results())
    assert CSP in html and "<script" not in html.lower() and "</script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "{{ 7*7 }}" in html and "[click me](javascript:alert(1))" in html
    assert '<span class="ctl">\\x1b</span>[31mred' in html and '<span class="ctl">\\u202e</span>' in html
    assert re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202e]", html) is None
    assert "runs/&lt;b&gt;u&lt;/b&gt;" in html
    page = assert_inert(html)
    text = "".join(page.text)
    for payload in PAYLOADS:
        assert text.count(payload) >= 6, payload  # item id, prompt, expected, four outputs, reason, command
    (tmp_path / "report.html").write_text(html, encoding="utf-8")


def test_html_content(example):
    html = render_html(example)
    page = assert_inert(html)
    text = " ".join(page.text)
    verdict, decided = example["verdict"], deciding_cell(example)
    assert verdict["label"] in page.title and "GATE FAILED" in text and "Uncontrolled" not in text
    skipped = skipped_cells(example)
    assert html.count('fill="url(#hatch)"') == len(skipped) and f"skipped: {skipped[0]['note']}" in text
    assert f'fill="{residual_colour(decided["residual"])}"' in html
    n_items = f"n={decided['n_items']}"
    head = f"<title>{decided['attack']} × {decided['probe']}\nresidual {decided['residual']:.2f} {interval(decided)}"
    assert f"{head}, {n_items}" in html and "decided the verdict</title>" in html
    membership = [c for c in example["cells"] if c["probe"] == "mia" and c["status"] == "ok"]
    assert html.count("<polyline") == 3 * len(membership)  # per attack: original, unlearned, reference lines
    for cell in membership:
        assert f"<h3>mia × {cell['attack']}</h3>" in html
    for curve in example["curves"]:
        assert f"<h3>{curve['name']} ({curve['probe']})</h3>" in html
    assert html.count('<path d="M') >= len(example["curves"])
    assert example["command"] in text and example["models"]["original"]["fingerprint"] in html
    bound = verdict["certified_bound"]
    headline = f"Certified bound {bound:.2f}: no attack in this plan recovers more than {bound:.0%} of what the"
    assert headline in text and "(95%, subjects resampled)" in text
    assert f"{decided['n_items']} ({decided['n_subjects']} subjects)" in text
    uncontrolled = copy.deepcopy(example)
    uncontrolled["controlled"] = False
    assert "Uncontrolled audit" in render_html(uncontrolled)


def test_templates_never_bypass_escaping():
    for template in (ROOT / "reports" / "templates").glob("*.j2"):
        source = template.read_text()
        assert "|safe" not in source.replace(" ", "") and "autoescape false" not in source, template.name


# ---- headless Chromium


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser ``make browser`` installs (``make test`` runs it); the tests skip, saying why, without one."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        print("SKIP reason: chromium is not installed (make browser installs it)")
        pytest.skip("chromium is not installed (make browser installs it)")
    probe = subprocess.run([found, "--headless", "--no-sandbox", "--version"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        print(f"SKIP reason: chromium does not run: {probe.stderr.decode()[-300:]}")
        pytest.skip("chromium does not run here")
    return found


def browse(chromium: str, page: Path, *extra: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
        "--user-data-dir=" + str(page.parent / "profile"),
    ]
    return subprocess.run(
        [chromium, *flags, *extra, page.as_uri()], capture_output=True, text=True, timeout=120, errors="replace"
    )


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Content Security Policy" in line]


def test_chromium_detects_a_script_and_a_csp_violation(chromium, tmp_path):
    """Positive control: the checks below would notice script execution and blocked content."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}">'
        "<title>T</title></head><body><img src=x onerror=\"document.title='X'\"></body></html>"
    )
    assert console_lines(browse(chromium, bad, "--dump-dom").stderr)
    unsafe = tmp_path / "unsafe.html"
    unsafe.write_text(
        "<!DOCTYPE html><html><head><title>T</title></head><body><script>document.title='XSS'</script></body></html>"
    )
    assert Tags(browse(chromium, unsafe, "--dump-dom").stdout).title == "XSS"


def test_hostile_report_is_inert_in_chromium(chromium, tmp_path):
    html = render_html(hostile_results())
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    run = browse(chromium, page, "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    assert console_lines(run.stderr) == []
    dom = assert_inert(run.stdout)
    assert dom.title == Tags(html).title and "XSS" not in dom.title
    text = "".join(dom.text)
    for payload in PAYLOADS:
        assert text.count(payload) >= 6, payload
    assert "\\x1b[31mred" in text and "\x1b" not in text


def test_heatmap_renders_in_chromium(chromium, tmp_path):
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    results = hostile_results()
    page = tmp_path / "report.html"
    page.write_text(render_html(results), encoding="utf-8")
    shot = tmp_path / "report.png"
    run = browse(chromium, page, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.exists(), run.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000) and len(image.getcolors(1 << 20)) > 50  # not blank

    pixels = np.asarray(image)

    def rgb(hex_colour: str) -> list[int]:
        return [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]

    def box(hex_colour: str) -> tuple[int, int, int, int, int]:
        """Pixel count and extent of the leftmost patch of one colour (neighbouring cells may share it)."""
        patches, _ = ndimage.label((pixels == rgb(hex_colour)).all(axis=2))
        ys, xs = np.nonzero(patches)
        if not len(xs):
            return 0, 0, 0, 0, 0
        ys, xs = np.nonzero(patches == patches[ys[xs.argmin()], xs.min()])
        return len(xs), int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())

    attack, probe = results["verdict"]["deciding_cells"][0]
    count, x0, x1, y0, y1 = box(residual_colour(cell_of(results, attack, probe)["residual"]))  # the deciding cell
    assert count > 2000 and 110 <= x1 - x0 <= 130 and 35 <= y1 - y0 <= 46 and 300 < y0 < 1200
    attacks, probes = attack_ids(results), probe_names(results)

    def corner(other_attack: str, other_probe: str) -> tuple[int, int]:
        """Another cell's top left, from the deciding cell's and the grid's 132 x 48 px pitch."""
        dx, dy = probes.index(other_probe) - probes.index(probe), attacks.index(other_attack) - attacks.index(attack)
        return x0 + dx * 132, y0 + dy * 48

    x, y = corner("none", probe)  # the plain model's cell, same column: its own colour beside its text
    margin = pixels[y + 3 : y + y1 - y0 - 3, x + 3 : x + 20].astype(int)
    assert np.abs(margin - rgb(residual_colour(cell_of(results, "none", probe)["residual"]))).max() <= 2
    skipped = next(c for c in skipped_cells(results) if c["attack"] == attack)
    x, y = corner(attack, skipped["probe"])  # the skipped cell, same row
    strip = pixels[y + 3 : y + 11, x + 8 : x + x1 - x0 - 8].astype(int)
    assert np.ptp(strip, axis=2).max() < 12 and strip.std() > 8 and 150 < strip.mean() < 235  # grey stripes


# ---- JUnit


def test_junit_counts_and_escaping(example):
    root = ET.fromstring(render_junit(example))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    cells = [(c["attack"], c["probe"]) for c in example["cells"]]
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        *cells,
        ("collateral", example["collateral"]["probe"]),
        ("gate", "verdict"),
    ]
    failed = [(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None]
    skipped = [(c.get("classname"), c.get("name")) for c in cases if c.find("skipped") is not None]
    by_outcome = {
        outcome: [(c["attack"], c["probe"]) for c in example["cells"] if c["outcome"] == outcome]
        for outcome in ("recovered", "clean")
    }
    assert by_outcome["recovered"] and failed == [*by_outcome["recovered"], ("gate", "verdict")]
    undecided = [cell for cell in cells if cell not in by_outcome["recovered"] + by_outcome["clean"]]
    assert skipped == undecided  # skipped, unclear and underpowered cells: neither evidence nor a pass
    counts = (str(len(cells) + 2), str(len(failed)), str(len(skipped)), "0")
    for node in (root, suite):
        assert (node.get("tests"), node.get("failures"), node.get("skipped"), node.get("errors")) == counts
    hostile = hostile_results()
    hostile["baseline"] = {"source": "old/results.json", "passed": False, "regressions": [HOSTILE]}
    xml = render_junit(hostile)
    root = ET.fromstring(xml)
    assert root.get("tests") == str(len(cells) + 4)  # the hostile attack's cell and the baseline added
    assert root.get("failures") == str(len(failed) + 1) and root.get("skipped") == str(len(skipped) + 1)
    assert "<script" not in xml and "\\x1b[31m" in xml and "\x1b" not in xml
    baseline = root.find("testsuite/testcase[@classname='baseline']/failure")
    assert baseline is not None and "<img src=x onerror=alert(1)>" in baseline.text  # escaped in XML, text when parsed


def test_underpowered_cells_are_judged_inconclusive(example):
    cell = {**example["cells"][0], "ci_high": 0.16, "zero_bound": 0.12, "outcome": "underpowered"}
    judgement = judge(example, cell)
    assert judgement.kind == "inconclusive"
    assert "underpowered, even a zero residual would reach 0.12" in judgement.message


def test_judgements_render_the_decided_outcome(example):
    """The reports never compare a cell with thresholds themselves: they render what the audit decided (its gate;
    a results.json of schema 1.1, which had none, by its outcome alone)."""
    base = {"attack": "a", "probe": "p", "n_items": 10, "controlled": True, "status": "ok"}

    def kind(low, mid, high, outcome, status="ok"):
        cell = {**base, "residual": mid, "ci_low": low, "ci_high": high, "status": status, "outcome": outcome}
        return judge(example, cell).kind

    assert kind(0.0, 0.02, 0.05, "clean") == "passed"
    assert kind(0.3, 0.4, 0.5, "recovered") == "failed"
    assert kind(0.05, 0.15, 0.3, "unclear") == "inconclusive"
    assert kind(0.0, 0.02, 0.05, "unclear") == "inconclusive"  # the outcome, not the numbers, decides
    assert kind(None, None, None, "uninformative") == "inconclusive"
    assert kind(0.3, 0.4, 0.5, "skipped", "skipped") == "skipped"
    assert kind(0.3, 0.4, 0.5, "skipped", "fallback") == "skipped"  # as the gate: a fallback is never evidence
    cell = {**base, "residual": 0.4, "ci_low": 0.3, "ci_high": 0.5, "outcome": "recovered", "gate": "passed"}
    assert judge(example, cell).kind == "passed"  # a policy that does not fail on HIDDEN: the audit said so


def test_custom_policy_thresholds_reach_the_reports():
    from auditor.stats.policy import Policy, Thresholds

    custom = {"policy": Policy(thresholds=Thresholds(hidden=0.4, removed=0.05)).to_dict()}
    assert policy(custom)["hidden"] == 0.4 and policy(custom)["removed"] == 0.05
    assert policy({})["hidden"] == 0.25  # the defaults without a policy


# ---- Markdown


def test_markdown_summary(example, monkeypatch, tmp_path):
    md = render_markdown(example)
    verdict, decided = example["verdict"], deciding_cell(example)
    assert f"**{verdict['label']}**" in md and "gate FAILED (exit 1)" in md
    bound = verdict["certified_bound"]
    assert f"**Certified bound {bound:.2f}: no attack in this plan recovers more than {bound:.0%} of what" in md
    assert f"| `{decided['attack']}` | **{decided['residual']:.2f}** {interval(decided)} |" in md
    assert "| skipped |" in md and f"relative drop {example['collateral']['drop']:.2f}" in md
    hostile = render_markdown(hostile_results())
    outside_code = re.sub(r"`[^`\n]*`", "", re.sub(r"(?ms)^(`{3,}).*?^\1$", "", hostile))
    assert "<script" in hostile and re.search(r"(?<!\\)[<>]", outside_code) is None  # raw only inside code
    assert "](javascript:" not in outside_code
    assert "\x1b" not in hostile and "\\x1b[31m" in hostile
    markdown_it = pytest.importorskip("markdown_it")
    rendered = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(hostile)
    assert "<script" not in rendered and "<img" not in rendered and 'href="javascript' not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered

    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert write_step_summary(md) == summary
    assert summary.read_text() == "earlier step\n" + md + ("" if md.endswith("\n") else "\n")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert write_step_summary(md) is None


# ---- writing and the index


def test_write_reports_atomically(example, tmp_path):
    written = write_reports(example, tmp_path / "audit")
    assert {k: p.name for k, p in written.items()} == {
        "html": "report.html",
        "junit": "junit.xml",
        "markdown": "summary.md",
    }
    assert sorted(p.name for p in (tmp_path / "audit").iterdir()) == ["junit.xml", "report.html", "summary.md"]
    assert written["html"].read_text().startswith("<!DOCTYPE html>")
    assert write_reports(example, tmp_path / "only", formats=("junit",)).keys() == {"junit"}
    with pytest.raises(UserError, match="unknown report format"):
        write_reports(example, tmp_path, formats=("pdf",))
    broken = copy.deepcopy(example)
    del broken["cells"]
    with pytest.raises(ResultsError):
        write_reports(broken, tmp_path / "broken")
    assert not (tmp_path / "broken").exists()


def test_index_page(example):
    removed = copy.deepcopy(example)
    for cell in removed["cells"]:
        if cell["status"] == "ok":
            cell.update(residual=0.01, ci_low=0.0, ci_high=0.03, outcome="clean")
    top = next(cell for cell in removed["cells"] if cell["status"] == "ok" and cell["attack"] != "none")
    top.update(residual=0.04, ci_low=0.0, ci_high=0.08)
    removed["verdict"].update(label="REMOVED", deciding_cells=[], gate_passed=True, failures=[], exit_code=0)
    html = render_index(
        [
            {"name": "npo <script>alert(1)</script>", "href": "npo/report.html", "results": example},
            {"name": "retrain", "href": "retrain/report.html", "results": removed},
        ]
    )
    page = assert_inert(html)
    assert CSP in html and "&lt;script&gt;" in html
    assert [a["href"] for t, a in page.tags if t == "a"] == ["npo/report.html", "retrain/report.html"]
    rows = html.split("<tr>")[2:]
    decided, drop = deciding_cell(example), f"{example['collateral']['drop']:.2f}"
    assert f"{decided['residual']:.2f}" in rows[0] and f"<code>{decided['attack']}</code>" in rows[0]
    assert "HIDDEN" in rows[0] and f'<td class="num">{drop}</td>' in rows[0]
    assert "REMOVED" in rows[1] and "0.04" in rows[1] and f"<code>{top['attack']}</code>" in rows[1]
    for href in ("javascript:alert(1)", "/etc/passwd", "https://x.invalid/r.html", "//x.invalid", "java\tscript:x"):
        with pytest.raises(UserError, match="relative path"):
            render_index([{"name": "m", "href": href, "results": example}])


def test_reports_do_not_import_torch():
    code = (
        "import json, sys; import reports, reports.load, reports.index; "
        "from reports import write_reports; import tempfile, pathlib; "
        f"r = json.load(open({str(EXAMPLE)!r})); write_reports(r, pathlib.Path(tempfile.mkdtemp())); "
        "reports.index.render_index([{'name': 'm', 'href': 'm.html', 'results': r}]); "
        "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
        "assert not bad, bad"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr


def test_non_finite_numbers_render(example):
    odd = copy.deepcopy(example)
    odd["cells"][0].update(residual=float("nan"), ci_low=float("nan"), ci_high=float("nan"), outcome="uninformative")
    odd["curves"][0]["points"][0]["residual"] = float("nan")
    assert judge(odd, odd["cells"][0]).kind == "inconclusive"
    assert "n/a" in render_html(odd) and "n/a" in render_markdown(odd)
    ET.fromstring(render_junit(odd))


def test_github_actions_example():
    yaml = pytest.importorskip("yaml")
    steps = yaml.safe_load((ROOT / "docs" / "github-actions.yml").read_text())["jobs"]["audit"]["steps"]
    runs = " ".join(step.get("run", "") for step in steps)
    uses = [step.get("uses", "").split("@")[0] for step in steps]
    assert "download.pytorch.org/whl/cpu" in runs and "pip install unlearn-audit" in runs and "--out audit" in runs
    assert {"actions/checkout", "actions/setup-python", "actions/upload-artifact"} <= set(uses)
    assert any("junit" in use for use in uses)


def test_roc_legend_names_the_gap_a_gap_and_the_auc_an_auc():
    from reports.charts import roc_legend

    score = {"value": 6.8, "extras": {"auc": {"min_k": 0.58}}}
    assert roc_legend(score, {"metric": "min_k", "aggregate": "gap"}) == "AUC 0.58, gap 6.80"
    assert roc_legend({**score, "value": 0.4}, {"metric": "min_k", "aggregate": "std_gap"}) == "AUC 0.58, d 0.40"
    assert roc_legend({**score, "value": 0.58}, {"metric": "min_k", "aggregate": "auc"}) == "AUC 0.58"


def test_unlearning_trace_is_shown_as_its_own_finding(example):
    row = {"attack": "relearn-forget", "probe": "<b>mia</b>", "k_unlearned": -1.5, "k_floor": 0.1, "below_floor": 1.6}
    results = {**example, "unlearning_trace": {"policy": "fail", "cells": [row]}}
    validate_results(results)
    html = render_html(results)
    assert "Unlearning trace" in html and "fails the gate on it" in html and "&lt;b&gt;mia&lt;/b&gt;" in html
    assert "1.60" in html and "<b>mia</b>" not in html
    markdown = render_markdown(results)
    assert "### Unlearning trace (fails the gate)" in markdown and "1.60 below the floor 0.10" in markdown
    assert "Unlearning trace" not in render_html({**example, "unlearning_trace": {"policy": "report", "cells": []}})


@pytest.mark.slow
def test_example_is_what_its_command_writes(example, tmp_path):
    """``make results-example`` audits the world for real; the shipped example is its output, not a hand edit."""
    out = tmp_path / "example.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "results_example.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    fresh = json.loads(out.read_text())
    validate_results(fresh)
    assert fresh["command"] == example["command"] and fresh["verdict"]["label"] == example["verdict"]["label"]
    shape = [(c["attack"], c["probe"], c["status"], c["n_items"], c.get("n_subjects")) for c in example["cells"]]
    assert [(c["attack"], c["probe"], c["status"], c["n_items"], c.get("n_subjects")) for c in fresh["cells"]] == shape
    assert fresh["verdict"]["deciding_cells"] == example["verdict"]["deciding_cells"]
