"""unlearn-audit: an adversarial robustness auditor for unlearned language models."""

from auditor.hub_code import block_hub_kernels

__version__ = "0.1.0"

block_hub_kernels()  # before anything imports bitsandbytes: no kernel is fetched from the Hub (see hub_code)
