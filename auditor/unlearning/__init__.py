"""Bundled unlearning methods and known-answer controls.

``ENTRIES`` maps each registered name to its lazy ``"module:Class"`` location.
"""

ENTRIES: dict[str, str] = {
    # known-answer controls
    "noop": "auditor.unlearning.controls:NoOp",
    "idk": "auditor.unlearning.controls:Refusal",
    "retrain": "auditor.unlearning.controls:ExactRetrain",
    "quant-hide": "auditor.unlearning.quant_hide:QuantHide",
    "quant-hide-3bit": "auditor.unlearning.quant_hide:QuantHideCoarse",
    # methods
    "ga": "auditor.unlearning.grad_ascent:GradientAscent",
    "ga-gd": "auditor.unlearning.grad_ascent:GradDiff",
    "ga-kl": "auditor.unlearning.grad_ascent:GradAscentKL",
    "ga-kl-shallow": "auditor.unlearning.grad_ascent:GradAscentKLShallow",
    "npo": "auditor.unlearning.npo:NPO",
    "npo-gd": "auditor.unlearning.npo:NPOGradDiff",
    "npo-gd-shallow": "auditor.unlearning.npo:NPOGradDiffShallow",
    "random-labels": "auditor.unlearning.relabel:RandomLabels",
    "adversarial": "auditor.unlearning.relabel:Adversarial",
    "ext-sub": "auditor.unlearning.ext_sub:ExtSub",
    "imagine": "auditor.unlearning.imagine:Imagine",
    "prune": "auditor.unlearning.pruning:SelectivePruning",
}
