"""Round-to-nearest (RTN) weight quantization in plain torch: the grid, its bins, the layers it covers.

Shared by the ``quant-rtn`` attack and the ``quant-hide`` unlearning control, so
both use exactly the same grid.

Grid. Each output row of a weight ``[out, in]`` is cut into groups of
``group_size`` consecutive input columns (the last group may be shorter;
``group_size`` <= 0 or >= ``in`` means one group per row, i.e. per output
channel). Per group:

- symmetric: ``scale = max|w| / (2^(b-1) - 1)``, levels ``q in [-(2^(b-1)-1), 2^(b-1)-1]``,
  ``w_hat = q * scale``;
- asymmetric: the range ``[min(w_min, 0), max(w_max, 0)]`` (zero kept representable,
  as GPTQ's quantizer does), ``scale = range / (2^b - 1)``, an integer zero point
  ``z = round(-min / scale)``, levels ``q in [0, 2^b - 1]``, ``w_hat = (q - z) * scale``.

Either way ``|w - w_hat| <= scale / 2`` for every weight.
"""

from __future__ import annotations

import torch
from torch import nn

BIN_MARGIN = 1e-3  # bins are shrunk by this share of a step, so ties and float error never change the level


def _padded_groups(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int, int]:
    """``weight`` as float32 ``[out, n_groups, g]``, plus ``g`` and the padding added to the last group.

    The last group is padded with copies of its own last column, so its min and max do not change.
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-d weight, got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    g = cols if group_size <= 0 or group_size >= cols else group_size
    pad = (-cols) % g
    w = weight.detach().to(torch.float32)
    if pad:
        w = torch.cat([w, w[:, -1:].expand(rows, pad)], dim=1)
    return w.reshape(rows, -1, g), g, pad


def _unpad(grouped: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return grouped.reshape(shape[0], -1)[:, : shape[1]]


def _grid(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor, int, int, torch.Tensor]:
    """Per-group ``scale`` and ``zero`` (shape ``[out, n_groups, 1]``), level range, and the range-setting mask."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        top = w.abs().amax(dim=-1, keepdim=True)
        scale = top / qmax
        zero = torch.zeros_like(scale)
        setter = w.abs() == top
        qmin = -qmax
    else:
        qmin, qmax = 0, 2**bits - 1
        low = w.amin(dim=-1, keepdim=True).clamp(max=0.0)
        high = w.amax(dim=-1, keepdim=True).clamp(min=0.0)
        scale = (high - low) / qmax
        setter = (w == low) | (w == high)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group stays zero
    if not symmetric:
        zero = torch.round(-low / scale)
    return scale, zero, qmin, qmax, setter


def _check_bits(bits: int) -> None:
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits}")


def rtn_quantize_dequantize(
    weight: torch.Tensor, bits: int, group_size: int = 128, symmetric: bool = True
) -> torch.Tensor:
    """The RTN quantize-dequantize of ``weight`` (same shape and dtype)."""
    _check_bits(bits)
    w, _, _ = _padded_groups(weight, group_size)
    scale, zero, qmin, qmax, _ = _grid(w, bits, symmetric)
    levels = torch.clamp(torch.round(w / scale) + zero, qmin, qmax)
    return _unpad((levels - zero) * scale, weight.shape).to(weight.dtype)


class RTNLinear(nn.Module):
    """A Linear layer that holds its RTN levels (8 or 16-bit integers) and group scales instead of a float weight:
    the weight ``rtn_quantize_dequantize`` gives, bit for bit, is rebuilt for each forward pass, one layer at a time.
    The bias is the input layer's own tensor."""

    def __init__(self, linear: nn.Linear, bits: int, group_size: int = 128, symmetric: bool = True):
        super().__init__()
        _check_bits(bits)
        w, _, _ = _padded_groups(linear.weight, group_size)
        scale, zero, qmin, qmax, _ = _grid(w, bits, symmetric)
        centred = torch.clamp(torch.round(w / scale) + zero, qmin, qmax) - zero  # integers in [-2^bits, 2^bits]
        self.register_buffer("levels", centred.to(torch.int8 if bits <= 7 and symmetric else torch.int16))
        self.register_buffer("scale", scale)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_shape, self.weight_dtype = linear.weight.shape, linear.weight.dtype

    @property
    def weight(self) -> torch.Tensor:
        return _unpad(self.levels.to(torch.float32) * self.scale, self.weight_shape).to(self.weight_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


def rtn_bin_bounds(
    weight: torch.Tensor, bits: int, group_size: int = 128, symmetric: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every weight, ``(low, high)``: values in ``[low, high]`` keep the same RTN level and grid.

    The interval is the weight's rounding bin under its group's current scale (and
    zero point), shrunk by ``BIN_MARGIN`` of a step (but always containing the
    weight), and cut to the group's range so no weight can change the scale. The
    weights that set the range (max |w| when symmetric, min and max when
    asymmetric) fix the grid, so their interval is the single point ``[w, w]``.
    Replacing any weights by values inside their bounds leaves
    ``rtn_quantize_dequantize`` unchanged. (Asymmetric grids: the integer zero
    point can put an end level's value just outside the group's range, hence
    outside that weight's bounds.) Bounds are computed in float32 and returned in
    the weight's dtype.
    """
    _check_bits(bits)
    w, _, _ = _padded_groups(weight, group_size)
    scale, zero, qmin, qmax, setter = _grid(w, bits, symmetric)
    levels = torch.clamp(torch.round(w / scale) + zero, qmin, qmax)
    centre = levels - zero
    low = (centre - 0.5 + BIN_MARGIN) * scale
    high = (centre + 0.5 - BIN_MARGIN) * scale
    if symmetric:
        top = w.abs().amax(dim=-1, keepdim=True)
        range_low, range_high = -top, top
    else:
        range_low = w.amin(dim=-1, keepdim=True).clamp(max=0.0)
        range_high = w.amax(dim=-1, keepdim=True).clamp(min=0.0)
    low = torch.minimum(torch.maximum(low, range_low), w)
    high = torch.maximum(torch.minimum(high, range_high), w)
    low = torch.where(setter, w, low)
    high = torch.where(setter, w, high)
    return _unpad(low, weight.shape).to(weight.dtype), _unpad(high, weight.shape).to(weight.dtype)


def quantizable_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` layers RTN quantizes by default: those inside the decoder blocks.

    The decoder blocks are the layers of the model's ``nn.ModuleList``s (``model.layers``
    in Llama, ``transformer.h`` in GPT-2 style models); every ``nn.Linear`` in them is
    included (attention and MLP projections). Not included: embeddings, the output
    head (``lm_head``, tied or not), norms, and any Linear outside the blocks. This is
    the same set GPTQ quantizes and the usual RTN setting of unlearning papers.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    block_prefixes = [name + "." for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    chosen = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module is head:
            continue
        if any(name.startswith(prefix) for prefix in block_prefixes):
            chosen.append((name, module))
    return chosen


def dense_rtn(model: nn.Module) -> nn.Module:
    """``model`` with every ``RTNLinear`` as a plain ``nn.Linear`` of its float weight (for saving): a copy of the
    module tree sharing every other tensor; ``model`` itself when it holds none."""
    compact = [name for name, module in model.named_modules() if isinstance(module, RTNLinear)]
    if not compact:
        return model
    from auditor.lm.adapters import shared_copy

    dense = shared_copy(model)
    for name in compact:
        quantized = dense.get_submodule(name)
        assert isinstance(quantized, RTNLinear)
        linear = nn.Linear(quantized.in_features, quantized.out_features, bias=quantized.bias is not None)
        linear.weight = nn.Parameter(quantized.weight, requires_grad=False)
        linear.bias = quantized.bias
        parent, _, child = name.rpartition(".")
        setattr(dense.get_submodule(parent), child, linear)
    return dense


@torch.no_grad()
def rtn_copy(loaded, bits: int = 4, group_size: int = 128, symmetric: bool = True):
    """A copy of a ``LoadedModel`` with every decoder Linear replaced by its RTN quantize-dequantize (as the
    quant-rtn attack)."""
    from auditor.lm.models import clone

    out = clone(loaded)
    for _, linear in quantizable_linears(out.model):
        linear.weight.copy_(rtn_quantize_dequantize(linear.weight, bits, group_size, symmetric))
    return out
