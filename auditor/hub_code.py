"""No code from the Hugging Face Hub at run time.

On a CPU with AVX512-BF16, importing bitsandbytes (peft imports it) makes its CPU
backend fetch a compiled kernel from the Hub (``kernels.get_kernel``): a
download at run time, and code nobody reviewed run inside the audit (offline, a
warning in every worker process). The auditor's rule is weights from
safetensors and no remote code, so that one module is executed with the
``kernels`` package hidden; bitsandbytes then falls back to its own CPU kernels
(``block_hub_kernels``, installed when ``auditor`` is imported).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

FETCHING_MODULES = ("bitsandbytes.backends.cpu.ops",)  # modules that call kernels.get_kernel when imported


class _WithoutKernels(importlib.abc.Loader):
    """Runs a module with ``import kernels`` failing, then puts ``kernels`` back as it was."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        saved = sys.modules.get("kernels")
        sys.modules["kernels"] = None  # type: ignore[assignment]  # `from kernels import ...` raises ImportError
        try:
            self.loader.exec_module(module)
        finally:
            if saved is None:
                del sys.modules["kernels"]
            else:
                sys.modules["kernels"] = saved


class _HubKernelBlocker(importlib.abc.MetaPathFinder):
    """Finds ``FETCHING_MODULES`` as usual and loads them with ``_WithoutKernels``."""

    def find_spec(self, name, path, target=None):
        if name not in FETCHING_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithoutKernels(spec.loader)
        return spec


def block_hub_kernels() -> None:
    """Install the blocker (once) ahead of the standard finders."""
    if not any(isinstance(finder, _HubKernelBlocker) for finder in sys.meta_path):
        sys.meta_path.insert(0, _HubKernelBlocker())
