"""Built-in probes of unlearn-audit (a plugin package: imports the auditor core only).

``ENTRIES`` maps each registered name to its lazy ``"module:Class"`` location.
"""

ENTRIES: dict[str, str] = {
    "qa": "probes.qa:QAProbe",
    "paraphrase": "probes.qa:ParaphraseProbe",
    "multihop": "probes.qa:MultihopProbe",
    "in-context": "probes.in_context:InContextProbe",
    "in-context-relearn": "probes.in_context:InContextRelearnProbe",
    "verbatim": "probes.verbatim:VerbatimProbe",
    "mia": "probes.mia:MIAProbe",
    "mcq": "probes.mcq:MCQProbe",
    "logit-lens": "probes.logit_lens:LogitLensProbe",
}
