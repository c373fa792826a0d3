"""Built-in attacks of unlearn-audit (a plugin package: imports the auditor core only).

``ENTRIES`` maps each registered name to its lazy ``"module:Class"`` location.
"""

ENTRIES: dict[str, str] = {
    "quant-rtn": "attacks.quantization:QuantRTN",
    "quant-bnb": "attacks.quantization:QuantBnB",
    "quant-gptq": "attacks.gptq:QuantGPTQ",
    "relearn-forget": "attacks.relearning:RelearnForget",
    "relearn-retain": "attacks.relearning:RelearnRetain",
    "relearn-unrelated": "attacks.relearning:RelearnUnrelated",
    "direction-ablation": "attacks.ablation:AblateDirections",
    "embedding-attack": "attacks.embedding:EmbeddingAttack",
    "jailbreak": "attacks.jailbreak:Jailbreak",
}
