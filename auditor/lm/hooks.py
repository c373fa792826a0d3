"""Decoder blocks and forward hooks: what the logit lens and direction ablation read and change."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch

_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm")
_BLOCK_NAMES = ("layers", "h", "blocks")


def decoder_parts(model) -> tuple[torch.nn.ModuleList, torch.nn.Module, torch.nn.Module] | None:
    """The decoder's blocks, its final norm and the output head; None where the model does not expose them."""
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    blocks = next(
        (getattr(decoder, n) for n in _BLOCK_NAMES if isinstance(getattr(decoder, n, None), torch.nn.ModuleList)), None
    )
    norm = next(
        (getattr(decoder, n) for n in _NORM_NAMES if isinstance(getattr(decoder, n, None), torch.nn.Module)), None
    )
    if blocks is None or norm is None or head is None:
        return None
    return blocks, norm, head


def block_states(output) -> torch.Tensor:
    """The hidden states a decoder block returns (alone, or first of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def forward_hooks(modules: Iterable[torch.nn.Module], hook: Callable) -> Iterator[None]:
    """``hook`` on every module's forward pass while inside, removed on the way out whatever happens."""
    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
