"""The code's shape, as docs/CONTRACTS.md states it: layers that import only downward, no import circle, small
modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("auditor", "attacks", "probes", "reports")
# docs/CONTRACTS.md's layer table, lowest first: a module imports from its own layer or those below only.
LAYERS = (
    ("auditor", "auditor.errors", "auditor.files", "auditor.types", "auditor.provenance", "auditor.hub_code"),
    ("auditor.stats",),
    ("auditor.lm",),
    ("auditor.data", "auditor.plugins", "auditor.registry"),
    ("auditor.world", "auditor.unlearning"),
    ("auditor.engine",),
    ("auditor.campaign",),
    ("auditor.cli", "auditor.api", "auditor.__main__"),
)
PLUGIN_PACKAGES = {"attacks", "probes"}  # import the auditor core (up to the plugin API) and nothing of each other
MAX_LINES = 300


def modules_named() -> set[str]:
    return set(modules())


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module of the four packages that ``path`` imports, at the top or inside a function (``from package
    import module`` is that module)."""
    known = modules_named()
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def layer(module: str) -> int | None:
    best = None
    for index, members in enumerate(LAYERS):
        for prefix in members:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def test_every_core_module_has_a_layer_and_imports_only_downward():
    found = modules()
    upward = []
    for name, path in found.items():
        if not name.startswith("auditor"):
            continue
        assert layer(name) is not None, f"{name} is in no layer of docs/CONTRACTS.md"
        upward += [
            f"{name} -> {dep}" for dep in imports(path) if dep.startswith("auditor") and layer(dep) > layer(name)
        ]
    assert not upward, upward


def test_plugins_import_the_core_below_the_engine_and_reports_import_no_torch():
    bad = []
    for name, path in modules().items():
        package = name.split(".")[0]
        for dep in imports(path):
            if package in PLUGIN_PACKAGES and (
                (dep.split(".")[0] in PLUGIN_PACKAGES - {package}) or dep.startswith("reports")
                or (dep.startswith("auditor") and layer(dep) > layer("auditor.plugins"))
            ):  # fmt: skip
                bad.append(f"{name} -> {dep}")
            if package == "reports" and dep.startswith(("auditor", "attacks", "probes")) and dep not in (
                "auditor.types", "auditor.errors", "auditor.files"
            ):  # fmt: skip
                bad.append(f"{name} -> {dep}")
    assert not bad, bad


def test_no_import_circle():
    graph = {name: {d for d in imports(path)} for name, path in modules().items()}
    graph = {name: {d for d in deps if d in graph and d != name} for name, deps in graph.items()}
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circles.append(trail[trail.index(dep) :] + [dep] if dep in trail else [node, dep])
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, circles


def test_no_module_is_over_300_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


JUDGING = {"auditor.stats.outcome", "auditor.stats.gate", "auditor.stats.policy"}  # policy: checks removed < hidden


def names_in(node: ast.AST) -> set[str]:
    """Identifiers, attributes and string keys an expression reads."""
    found = set()
    for part in ast.walk(node):
        if isinstance(part, ast.Name):
            found.add(part.id)
        elif isinstance(part, ast.Attribute):
            found.add(part.attr)
        elif isinstance(part, ast.Constant) and isinstance(part.value, str):
            found.add(part.value)
    return found


def test_only_the_judging_modules_compare_with_a_threshold():
    """One place judges: no comparison with the removed or hidden threshold outside stats.outcome and stats.gate
    (whose judgement engine.judge records), the reports and the CLI included."""
    found = []
    for name, path in modules().items():
        if name in JUDGING:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and {"removed", "hidden", "thresholds"} & names_in(node):
                found.append(f"{name}:{node.lineno}")
    assert not found, found
