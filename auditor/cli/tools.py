"""Commands that run one piece alone: ``score``, ``probe``, ``attack``, ``unlearn``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from auditor.cli.common import (
    echo_json,
    ensure_new_dir,
    model_options,
    plugin_spec,
    renamed,
    set_threads,
    show_progress,
    spec_of,
)
from auditor.errors import UserError

PARAM_HELP = "Deprecated: write NAME:k=v,... instead."


def prompt_options(func):
    """How questions become prompts and answers completions, shared by every command that asks a model."""
    options = [
        click.option(
            "--chat-template",
            default="auto",
            show_default=True,
            envvar="UNLEARN_AUDIT_CHAT_TEMPLATE",
            help="auto: the tokenizer's chat template when it has one; none: plain text; or a Jinja template file.",
        ),
        click.option(
            "--prompt-template",
            envvar="UNLEARN_AUDIT_PROMPT_TEMPLATE",
            help="The prompt around {question}: the whole prompt in plain mode (default "
            "'Question: {question}\\nAnswer:'), the user turn with a chat template (default '{question}').",
        ),
        click.option(
            "--system-prompt",
            envvar="UNLEARN_AUDIT_SYSTEM_PROMPT",
            help="A system turn before each question (chat templates only).",
        ),
        click.option(
            "--answer-prefix",
            envvar="UNLEARN_AUDIT_ANSWER_PREFIX",
            help="What precedes each answer (default: one space in plain mode, what the chat template writes).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def prompt_format(tokenizer, options: dict):
    """The ``PromptFormat`` the prompt options ask for, for a model with ``tokenizer``."""
    from auditor.lm.prompts import resolve_format

    def unescaped(text: str | None) -> str | None:
        return None if text is None else text.replace("\\n", "\n")

    return resolve_format(
        tokenizer,
        chat_template=options["chat_template"],
        prompt_template=unescaped(options["prompt_template"]),
        system_prompt=options["system_prompt"],
        answer_prefix=unescaped(options["answer_prefix"]),
    )


@click.command("score")
@click.option("--model", "model_path", required=True, help="Model directory, hub id, or base=...,adapter=....")
@click.option("--items", "item_files", required=True, multiple=True, type=click.Path(), help="QA file (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--keep-known",
    type=click.Path(dir_okay=False),
    help="Write the items the model answers right (JSON Lines): a forget or retain set of what it knows.",
)
@click.option(
    "--keep-unknown",
    type=click.Path(dir_okay=False),
    help="Write the items it answers wrong: a holdout set of facts of the same kind that it does not know.",
)
@prompt_options
@model_options
def score(model_path: str, item_files: tuple[str, ...], as_json: bool, keep_known, keep_unknown, **options) -> None:
    """Print what a model knows of each QA item set: accuracy, ROUGE-L recall, answer probability."""
    from auditor.campaign.unlearn_runner import qa_item_scores, qa_knowledge
    from auditor.data import load_items
    from auditor.lm.models import load_model

    set_threads()
    sets = [load_items(path, Path(path).stem) for path in item_files]
    loaded = load_model(spec_of(model_path, options))
    prompts = prompt_format(loaded.tokenizer, options)
    scores = {itemset.source: qa_item_scores(loaded, itemset, prompts) for itemset in sets}
    rows = {itemset.source: qa_knowledge(loaded, itemset, prompts, scores[itemset.source]) for itemset in sets}
    if keep_known or keep_unknown:
        known = {(source, s.item_id) for source, per_set in scores.items() for s in per_set if s.score == 1.0}
        items = [(itemset.source, item) for itemset in sets for item in itemset.items]
        for path, keep in ((keep_known, True), (keep_unknown, False)):
            if path:
                write_items(path, [item for source, item in items if ((source, item.id) in known) == keep])
    if as_json:
        echo_json({"model": model_path, "fingerprint": loaded.fingerprint, "sets": rows})
        return
    click.echo(f"{'items':40s} {'n':>5s} {'accuracy':>9s} {'rouge_l':>8s} {'prob':>6s}")
    for source, row in rows.items():
        click.echo(f"{source[-40:]:40s} {row['n']:5d} {row['accuracy']:9.3f} {row['rouge_l']:8.3f} {row['prob']:6.3f}")


def write_items(path: str, items) -> None:
    """QA items as JSON Lines in the format ``load_items`` reads (id, question, answer and the optional fields)."""
    from dataclasses import asdict

    with open(path, "w", encoding="utf-8") as handle:
        for item in items:
            record = {k: v for k, v in asdict(item).items() if v not in (None, (), {}, [])}
            record.update(record.pop("extra", {}))
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


@click.command("probe")
@click.argument("name", metavar="NAME[:k=v,...]")
@click.option("--model", "model_path", required=True, help="Model directory, hub id, or base=...,adapter=....")
@click.option("--forget", type=click.Path(), help="Forget items (QA).")
@click.option("--items", type=click.Path(), hidden=True, help="Deprecated: --forget.")
@click.option("--retain", type=click.Path(), help="Retain QA (few-shot examples); default: --forget.")
@click.option("--holdout", type=click.Path(), help="Holdout QA (MIA non-members).")
@click.option("--multihop", type=click.Path(), help="Multi-hop QA about the forget subjects.")
@click.option("--forget-texts", type=click.Path(), help="Forget texts (verbatim, text MIA).")
@click.option("--texts", type=click.Path(), hidden=True, help="Deprecated: --forget-texts.")
@click.option("--holdout-texts", type=click.Path(), help="Holdout texts (text MIA).")
@click.option("--reference", help="Reference model for reference-based MIA.")
@click.option("--param", "params", multiple=True, hidden=True, help=PARAM_HELP)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print JSON with every item.")
@prompt_options
@model_options
def probe(name, model_path, forget, items, retain, holdout, multihop, forget_texts, texts, **options) -> None:
    """Run one probe (NAME, or NAME:k=v,... with its parameters) on one model and print its result."""
    from auditor.data import load_audit_data
    from auditor.lm.models import load_model
    from auditor.lm.scoring import ScoringModel
    from auditor.plugins import RunContext
    from auditor.registry import PROBES

    set_threads()
    holdout_texts, reference, seed, as_json = (
        options.pop(k) for k in ("holdout_texts", "reference", "seed", "as_json")
    )
    probe_name, values = plugin_spec(name, options.pop("params"))
    instance = PROBES.get(probe_name)(**values)
    forget = renamed(forget, items, "--forget", "--items")
    forget_texts = renamed(forget_texts, texts, "--forget-texts", "--texts")
    if forget is None:
        raise UserError("give --forget (the forget set's QA file)")
    data = load_audit_data(
        *(forget, retain or forget),
        holdout=holdout,
        multihop=multihop,
        forget_texts=forget_texts,
        holdout_texts=holdout_texts,
        disjoint=retain is not None,
    )
    loaded = load_model(spec_of(model_path, options))
    reference_lm = ScoringModel(load_model(spec_of(reference, options))) if reference else None
    ctx = RunContext(data=data, seed=seed, prompts=prompt_format(loaded.tokenizer, options), reference_lm=reference_lm)
    result = instance.run(ScoringModel(loaded), ctx, model_path)
    if as_json:
        from dataclasses import asdict

        echo_json(asdict(result))
        return
    scored = sum(1 for s in result.items if s.score is not None)
    value = "n/a" if result.value is None else f"{result.value:.4f}"
    click.echo(f"{instance.spec}  model={model_path}")
    click.echo(f"status={result.status}  {result.metric} ({result.aggregate}) = {value}  items scored={scored}")
    if result.reason:
        click.echo(f"reason: {result.reason}")
    for key, extra in result.extras.items():
        if not isinstance(extra, dict | list):
            click.echo(f"{key}: {extra}")
        elif key == "auc" and isinstance(extra, dict):
            click.echo("auc: " + ", ".join(f"{k}={v:.3f}" for k, v in extra.items()))


@click.command("attack")
@click.argument("name", metavar="NAME[:k=v,...]")
@click.option("--model", "model_path", required=True, help="Model to attack (never written).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Where the attacked model(s) go.")
@click.option("--forget", type=click.Path(), help="Forget QA (relearn-forget).")
@click.option("--retain", type=click.Path(), help="Retain QA (relearn-retain, GPTQ calibration).")
@click.option("--unrelated", type=click.Path(), help="Unrelated texts (relearn-unrelated).")
@click.option("--param", "params", multiple=True, hidden=True, help=PARAM_HELP)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@prompt_options
@model_options
def attack(name, model_path, out, forget, retain, unrelated, params, seed, **options) -> None:
    """Apply one attack (NAME, or NAME:k=v,... with its parameters) to a model and save the result(s): LoRA
    adapters as PEFT folders (load one with --model base=MODEL,adapter=DIR), other models as Hugging Face folders."""
    from auditor.data import load_audit_data
    from auditor.engine.attack_runner import save_variant
    from auditor.lm.models import load_model
    from auditor.plugins import RunContext
    from auditor.registry import ATTACKS

    set_threads()
    attack_name, values = plugin_spec(name, params)
    instance = ATTACKS.get(attack_name)(**values)
    spec = spec_of(model_path, options)
    out_dir = ensure_new_dir(out, protect=(spec.path, spec.adapter))
    if not (forget or retain):
        raise UserError("give --forget and/or --retain (the attack's data; relearning needs them)")
    data = load_audit_data(forget or retain, retain or forget, unrelated=unrelated, disjoint=bool(forget and retain))
    loaded = load_model(spec)
    prompts = prompt_format(loaded.tokenizer, options)
    ctx = RunContext(data=data, seed=seed, work_dir=out_dir, progress=show_progress(), prompts=prompts)
    outcome = instance.apply(loaded, ctx)
    saved = {}
    for variant in outcome.variants:
        target = out_dir / variant.name if len(outcome.variants) > 1 else out_dir
        if save_variant(variant, instance, loaded, target):
            saved[variant.name] = str(target)
    from dataclasses import asdict

    record = {**asdict(outcome.result), "saved": saved}
    (out_dir / "attack.json").write_text(json.dumps(record, indent=2, default=str))
    click.echo(
        f"{instance.spec}: {outcome.result.status}" + (f" ({outcome.result.reason})" if outcome.result.reason else "")
    )
    for variant_name, path in saved.items():
        click.echo(f"  {variant_name}: {path}")


@click.command("unlearn")
@click.option(
    "--method",
    required=True,
    metavar="NAME[:k=v,...]",
    help="Unlearning method and its parameters (see 'unlearn-audit list methods').",
)
@click.option("--model", "model_path", required=True, help="The original model (never written).")
@click.option("--forget", required=True, type=click.Path(), help="What to remove (QA).")
@click.option("--retain", required=True, type=click.Path(), help="What to keep (QA).")
@click.option("--forget-texts", type=click.Path(), help="Texts to remove as well (methods that train on plain text).")
@click.option(
    "--neighbours",
    type=click.Path(),
    help="Facts of the forget set's kind in neither set (QA), measured before and after: what else the method broke.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--param", "params", multiple=True, hidden=True, help=PARAM_HELP)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--lora/--full", default=None, help="LoRA (merged) or full fine-tuning; default: the method's.")
@prompt_options
@model_options
def unlearn(method, model_path, forget, retain, forget_texts, neighbours, out, params, seed, lora, **options) -> None:
    """Produce an unlearned model with a bundled method; write it and unlearning.json."""
    from auditor.campaign.unlearn_runner import unlearn_to_dir
    from auditor.data import load_items
    from auditor.lm.models import load_model
    from auditor.plugins import RunContext
    from auditor.registry import METHODS
    from auditor.types import AuditData

    set_threads()
    method, values = plugin_spec(method, params)
    cls = METHODS.get(method)
    if lora is not None:
        if "lora" not in cls.defaults:
            raise UserError(f"{method} has no LoRA/full choice")
        values["lora"] = str(lora)
    instance = cls(**values)
    spec = spec_of(model_path, options)
    out_dir = ensure_new_dir(out, protect=(spec.path, spec.adapter))
    forget_set, retain_set = load_items(forget, "forget"), load_items(retain, "retain")
    loaded = load_model(spec)
    texts = load_items(forget_texts, "forget_texts", kind="text") if forget_texts else None
    data = AuditData(forget=forget_set, retain=retain_set, forget_texts=texts)
    ctx = RunContext(data=data, seed=seed, progress=show_progress(), prompts=prompt_format(loaded.tokenizer, options))
    near = load_items(neighbours, "neighbours") if neighbours else None
    record = unlearn_to_dir(instance, loaded, forget_set, retain_set, out_dir, ctx, neighbours=near)
    before, after = record["before"], record["after"]
    changes = ", ".join(f"{split} {before[split]['accuracy']:.3f} -> {after[split]['accuracy']:.3f}" for split in after)
    click.echo(f"{method}: accuracy {changes}, {record['wall_seconds']:.1f} s -> {out_dir}")
    info = record["info"]
    if "stop_reason" in info:
        click.echo(f"stopped: {info['stop_reason']}")
