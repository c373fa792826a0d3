"""Hand freed memory back to the system, so that an audit's peak is the models it holds, not what it once held.

glibc keeps freed heap blocks for reuse and raises its ``mmap`` threshold as
large blocks come and go (up to 32 MB), so the activations of one fine-tune stay
resident after it: a LoRA fine-tune of a 135M model left 1.2 GB more resident
memory than it needed (measured with ``/proc/self/status`` ``VmHWM``). Blocks of
256 KiB and more taken straight from ``mmap`` go back when freed. With 1 MiB, a
fine-tune on 8 examples of that model (activations of 1.0 MB each, just under it)
still peaked 0.66 GB above its model, its freed blocks fragmenting the heap;
with 256 KiB, 0.22 GB, in 1.5x the time. Each such block is mapped
afresh, which costs time where a model's activations are small and many: the
setting is made once a model of ``LARGE_MODEL`` parameters is loaded
(the embedded world's demo took 250 s with it from the start, 181 s without).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import sys
from pathlib import Path

MMAP_THRESHOLD = 256 << 10  # bytes: larger blocks are mapped on their own, and unmapped when freed
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)

LARGE_MODEL = 50_000_000  # parameters: from here on, freed activations go back to the system
ROOM_FACTOR = 4  # a fast path that holds N more bytes is taken when this many times N is free
BUDGET_VARIABLE = "UNLEARN_AUDIT_MEMORY_BUDGET"  # bytes (or 512M, 8G) the memory rules may count on, at most
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def tune_allocator() -> None:
    """Large blocks from ``mmap`` in this process (``mallopt``) and in its children (glibc's environment variable,
    read at their start). Nothing changes where the C library is not glibc, or where the user set it."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def memory_budget() -> int | None:
    """``UNLEARN_AUDIT_MEMORY_BUDGET`` in bytes, when set."""
    text = os.environ.get(BUDGET_VARIABLE, "").strip().upper().removesuffix("B")
    if not text:
        return None
    unit = UNITS.get(text[-1], 1)
    try:
        return int(float(text[:-1] if text[-1] in UNITS else text) * unit)
    except ValueError:
        from auditor.errors import UserError

        raise UserError(f"{BUDGET_VARIABLE}={os.environ[BUDGET_VARIABLE]!r}: expected bytes, e.g. 8G") from None


def memory_available(device: str = "cpu") -> int:
    """Bytes free for new tensors on ``device``: the GPU's free memory (``torch.cuda.mem_get_info``) or the
    system's available memory (psutil), capped by ``UNLEARN_AUDIT_MEMORY_BUDGET``."""
    import psutil

    if str(device).startswith("cuda"):
        import torch

        free = torch.cuda.mem_get_info(torch.device(device))[0]
    else:
        free = psutil.virtual_memory().available
    budget = memory_budget()
    return free if budget is None else min(free, budget)


def room_for(nbytes: int, device: str = "cpu") -> bool:
    """Whether ``nbytes`` more (a dense copy, a merged adapter) leave room to work: ``ROOM_FACTOR`` times it free."""
    return memory_available(device) >= ROOM_FACTOR * nbytes


def free_memory() -> None:
    """Collect dropped models now and hand the freed memory back: to the system (glibc's ``malloc_trim``, where
    there is one) and, on a GPU, from torch's CUDA cache."""
    gc.collect()
    torch = sys.modules.get("torch")  # not imported: nothing on a GPU to free
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def is_large(model) -> bool:
    """Whether ``model`` has ``LARGE_MODEL`` parameters or more: only then is its garbage (a dropped copy, the
    activations of a fine-tune) worth a collection. A smaller model's garbage is a few MB, and a collection
    (0.1-0.25 s in a process holding transformers) after each step of an embedded-world audit costs more than
    it frees."""
    return sum(p.numel() for p in model.parameters()) >= LARGE_MODEL


def free_memory_of_large(model) -> None:
    """``free_memory`` when ``model`` is large (``is_large``): after a step that left garbage the size of
    activations (a fine-tune, an attack)."""
    if is_large(model):
        free_memory()


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")  # writing "5" resets the peak resident memory (Linux 4.0 on)
_earlier_peak = 0  # bytes: the highest peak before the window was last reset


def window_peak() -> int | None:
    """Peak resident memory in bytes since the window was last reset (``VmHWM``); ``None`` where unreadable."""
    with contextlib.suppress(OSError):
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def reset_window() -> bool:
    """Start a new peak-memory window, keeping the peak so far for ``peak_rss``; ``False`` where it cannot."""
    global _earlier_peak
    peak = window_peak()
    if peak is None:
        return False
    _earlier_peak = max(_earlier_peak, peak)
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """The process's peak resident memory in bytes, across every window."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, kilobytes on Linux
    current = window_peak() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return max(_earlier_peak, current)
