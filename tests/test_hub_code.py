"""No code is fetched from the Hugging Face Hub at run time (``auditor.hub_code``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from auditor import hub_code

FETCHER = """
try:
    from kernels import get_kernel
    HID_KERNELS = False
except ImportError:
    HID_KERNELS = True
"""


def test_a_fetching_module_runs_with_kernels_hidden_and_kernels_comes_back(tmp_path, monkeypatch):
    (tmp_path / "fetcher_module.py").write_text(FETCHER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(hub_code, "FETCHING_MODULES", ("fetcher_module",))
    monkeypatch.delitem(sys.modules, "fetcher_module", raising=False)
    hub_code.block_hub_kernels()  # installed by `import auditor` already: not twice
    assert sum(isinstance(f, hub_code._HubKernelBlocker) for f in sys.meta_path) == 1
    import fetcher_module
    import kernels

    assert fetcher_module.HID_KERNELS
    assert sys.modules["kernels"] is kernels  # every other import of kernels works as before


def test_importing_bitsandbytes_after_auditor_asks_the_hub_for_no_kernel():
    """On a CPU with AVX512-BF16 (this project's machines), bitsandbytes would call kernels.get_kernel here."""
    code = textwrap.dedent(
        """
        import kernels
        asked = []
        kernels.get_kernel = lambda *args, **kwargs: asked.append(args)
        import auditor
        from bitsandbytes.backends.cpu import ops
        print("asked", len(asked))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.split() == ["asked", "0"]
