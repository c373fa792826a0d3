"""Bad input gets one clear line and exit code 2, and no partial report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, threads: int | None = None) -> subprocess.CompletedProcess:
    """The CLI in a new process (with ``threads`` CPU threads when given)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    return subprocess.run(
        [sys.executable, "-m", "auditor", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def broken_models(world, tmp_path_factory):
    """A model directory without safetensors, and one whose tokenizer differs from the original's."""
    import torch

    from auditor.world.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("broken")
    pickled = root / "pickled"
    pickled.mkdir()
    shutil.copy(world.original / "config.json", pickled / "config.json")
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_model.bin")
    other_tok = root / "other-tokenizer"
    shutil.copytree(world.original, other_tok)
    for file in other_tok.glob("tokenizer*"):
        file.unlink()
    train_tokenizer(["completely different text " * 20, "with other merges"], 300).save_pretrained(other_tok)
    truncated = root / "truncated"
    shutil.copytree(world.original, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4096])
    return {"pickled": pickled, "other_tokenizer": other_tok, "truncated": truncated}


def audit_args(world, out, **overrides):
    args = {
        "--original": str(world.original),
        "--unlearned": str(world.original),
        "--reference": str(world.reference),
        "--forget": str(world.file("forget")),
        "--retain": str(world.file("retain")),
        "--out": str(out),
        "--preset": "quick",
    }
    args.update(overrides)
    flat = ["audit"]
    for key, value in args.items():
        flat += [key, value]
    return flat


def bad_jsonl(tmp_path, content):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    return str(path)


def policy(tmp_path, content):
    path = tmp_path / "policy.yaml"
    path.write_text(content)
    return {"--policy": str(path)}


def repeated_line(world, tmp_path):
    first = Path(world.file("forget")).read_text().splitlines()[0]
    row = {k: v for k, v in json.loads(first).items() if k != "id"}
    return bad_jsonl(tmp_path, (json.dumps(row) + "\n") * 2)


CASES = {
    "missing model": lambda w, t, b: {"--unlearned": str(t / "no-such-model")},
    "no safetensors": lambda w, t, b: {"--unlearned": str(b["pickled"])},
    "mismatched tokenizers": lambda w, t, b: {"--unlearned": str(b["other_tokenizer"])},
    "malformed forget file": lambda w, t, b: {"--forget": bad_jsonl(t, '{"question": "Q", "answer": "A"}\n{oops\n')},
    "empty forget file": lambda w, t, b: {"--forget": bad_jsonl(t, "")},
    "unknown attack": lambda w, t, b: {"--attack": "quant-rtm"},
    "unknown probe": lambda w, t, b: {"--probe": "paraphrse"},
    "bad attack parameter": lambda w, t, b: {"--attack": "quant-rtn:bitz=4"},
    "negative seed": lambda w, t, b: {"--seed": "-5"},
    "system prompt without a chat template": lambda w, t, b: {"--system-prompt": "Be brief."},
    "missing chat template file": lambda w, t, b: {"--chat-template": str(t / "missing.jinja")},
    "missing gguf file": lambda w, t, b: {"--unlearned": str(t / "missing.gguf")},
    "missing model named like a hub id": lambda w, t, b: {"--unlearned": "no-such/model"},
    "truncated safetensors": lambda w, t, b: {"--unlearned": str(b["truncated"])},
    "policy value not a number": lambda w, t, b: policy(t, "collateral_limit: abc\n"),
    "policy threshold not a number": lambda w, t, b: policy(t, "thresholds: {removed: high}\n"),
    "policy thresholds out of order": lambda w, t, b: policy(t, "thresholds: {removed: 0.5, hidden: 0.1}\n"),
    "unknown policy key": lambda w, t, b: policy(t, "thresholdz: {}\n"),
    "the same file to forget and to retain": lambda w, t, b: {"--retain": str(w.file("forget"))},
    "the forget items as holdout": lambda w, t, b: {"--holdout": str(w.file("forget"))},
    "a repeated item": lambda w, t, b: {"--forget": repeated_line(w, t)},
    "an empty answer": lambda w, t, b: {"--forget": bad_jsonl(t, '{"question": "Who?", "answer": " "}\n')},
    "missing baseline": lambda w, t, b: {"--baseline": str(t / "old" / "results.json")},
    "attack budget under 1": lambda w, t, b: {"--attack-budget": "0.5"},
}


# Every bad-input case in one process (one start of torch and transformers, not one per case), weights refused.
EACH_CASE = """
import contextlib, io, json, sys
import transformers
def refuse(*args, **kwargs):
    raise RuntimeError("model weights were loaded")
transformers.AutoModelForCausalLM.from_pretrained = refuse
from auditor.cli import main
answers = []
for args in json.loads(sys.stdin.read()):
    sys.argv = ["unlearn-audit", *args]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exit:
            code = exit.code
    answers.append([code, err.getvalue()])
print(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def bad_input_runs(world, broken_models, tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """Case -> exit code, stderr and output folder of the audit command with that bad input."""
    runs = {}
    for case, overrides in CASES.items():
        root = tmp_path_factory.mktemp("bad")
        runs[case] = (audit_args(world, root / "out", **overrides(world, root, broken_models)), root / "out")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", EACH_CASE],
        input=json.dumps([args for args, _ in runs.values()]),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout.splitlines()[-1])
    return {case: (code, err, out) for (case, (_, out)), (code, err) in zip(runs.items(), answers, strict=True)}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_before_any_work(bad_input_runs, case):
    """One line on stderr, exit 2, no output folder, and no model loaded (the weights loader refuses to run)."""
    code, stderr, out = bad_input_runs[case]
    assert code == 2, (case, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    assert not out.exists()  # refused while the options are read, before the output folder is made


def test_unwritable_out_dir(world, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli(*audit_args(world, blocker / "out"))
    assert result.returncode == 2 and result.stderr.startswith("error: cannot write"), result.stderr


def test_refuses_to_write_into_an_input_model(world):
    result = run_cli(*audit_args(world, world.original))
    assert result.returncode == 2 and "input directory" in result.stderr, result.stderr


def test_help_and_list_print_cleanly_and_help_needs_no_torch():
    result = run_cli("--help")
    assert result.returncode == 0 and "audit" in result.stdout and result.stderr == "", result.stderr
    for kind in ("attacks", "probes", "methods"):
        listed = run_cli("list", kind)
        assert listed.returncode == 0 and len(listed.stdout.splitlines()) >= 3 and listed.stderr == "", listed.stderr
    presets = run_cli("list", "presets")
    assert presets.returncode == 0 and "standard:" in presets.stdout and "quant-rtn:bits=4" in presets.stdout
    assert "core:" in presets.stdout and "default: core" in run_cli("demo", "--help").stdout
    assert presets.stderr == "", presets.stderr
    for args in (["--help"], ["audit", "--help"], ["list", "presets"]):  # what makes them fast: torch stays unloaded
        code = (
            f"import sys; from auditor.cli import cli; cli({args!r}, standalone_mode=False); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
        )
        loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert loaded.returncode == 0 and loaded.stdout.splitlines()[-1] == "[]", (args, loaded.stdout, loaded.stderr)


def test_score_keeps_the_known_and_the_unknown_items(world, tmp_path):
    from auditor.data import load_items

    known, unknown = tmp_path / "known.jsonl", tmp_path / "unknown.jsonl"
    holdout = str(world.file("holdout"))
    result = run_cli("score", "--model", str(world.original), "--items", holdout, "--json",
                     "--keep-known", str(known), "--keep-unknown", str(unknown))  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)["sets"][holdout]
    kept, rest = load_items(str(known), "known"), load_items(str(unknown), "unknown")
    assert len(kept) == round(row["accuracy"] * row["n"]) and len(kept) + len(rest) == row["n"]
    assert {i.id for i in kept.items}.isdisjoint(i.id for i in rest.items)
    again = run_cli("score", "--model", str(world.original), "--items", str(known), "--json")
    assert json.loads(again.stdout)["sets"][str(known)]["accuracy"] == 1.0  # what it knew, it still answers


def test_unlearn_measures_the_neighbours(world, tmp_path):
    out = tmp_path / "noop"
    forget, retain, holdout = (str(world.file(name)) for name in ("forget", "retain", "holdout"))
    result = run_cli("unlearn", "--method", "noop", "--model", str(world.original), "--forget", forget,
                     "--retain", retain, "--neighbours", holdout, "--out", str(out))  # fmt: skip
    assert result.returncode == 0 and "neighbours" in result.stdout, result.stderr
    record = json.loads((out / "unlearning.json").read_text())
    assert record["before"]["neighbours"] == record["after"]["neighbours"]  # noop changes nothing
    assert record["before"]["neighbours"]["n"] == len(Path(holdout).read_text().splitlines())


def test_attack_saves_a_relearning_adapter_that_loads_on_its_base(world, tmp_path):
    out, retain = tmp_path / "relearned", str(world.file("retain"))
    result = run_cli("attack", "relearn-retain:steps=2", "--model", str(world.original), "--retain", retain,
                     "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert json.loads((out / "attack.json").read_text())["saved"] == {"main": str(out)}
    scored = run_cli("score", "--model", f"base={world.original},adapter={out}", "--items", retain, "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["sets"][retain]["n"] > 0


def test_device_map_and_batch_size_score_alike(world, tmp_path):
    holdout = str(world.file("holdout"))
    plain = run_cli("score", "--model", str(world.original), "--items", holdout, "--json")
    mapped = run_cli("score", "--model", str(world.original), "--items", holdout, "--json",
                     "--device-map", "auto", "--batch-size", "3")  # fmt: skip
    assert plain.returncode == 0 and mapped.returncode == 0, mapped.stderr
    assert (
        json.loads(mapped.stdout)["sets"][holdout]["accuracy"] == json.loads(plain.stdout)["sets"][holdout]["accuracy"]
    )
