"""unlearn-audit: an adversarial robustness auditor for unlearned language models."""

__version__ = "0.1.0"
