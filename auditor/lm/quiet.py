"""Silence library progress bars and deprecation chatter (the CLI and its worker processes)."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    """No library progress bars or deprecation chatter unless ``UNLEARN_AUDIT_DEBUG=1``."""
    if os.environ.get("UNLEARN_AUDIT_DEBUG") == "1":
        return
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # bitsandbytes (imported by peft) warns on every import on CPUs with AVX512-BF16 that an optional kernel
    # package is missing; installing it would make bitsandbytes fetch kernels from the hub.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
