"""Convolutions over maps of a few pixels, as the products they are.

A zoo model trained on 32x32 images ends with maps of 2x2 and 1x1 pixels: MobileNetV3's last
blocks, its squeeze-excite layers (a 1x1 convolution of a pooled 1x1 map) and its head. There a
convolution is a tiny computation behind oneDNN's per-call set-up, which costs more than the
arithmetic (measured with torch 2.14 on 2 cores, forward + backward, batch 128, channels-last):

- a 1x1 convolution of a 1x1 map is a matrix product: ``F.linear`` over ``(N, C)`` is
  2-2.7x faster (576 -> 144 channels: 1.08 ms -> 0.48 ms);
- a depthwise convolution whose output pixels times input pixels are at most 16 (a 5x5 kernel
  over a 2x2 or 1x1 map) is a weighted sum of a few input pixels per output pixel, one weight
  per channel: a broadcast product over a gathered ``(out, in, C)`` weight is 2-13x faster
  (576 channels, 1x1 map, 5x5 kernel: 2.0 ms -> 0.15 ms). Past 16 it gets slower than oneDNN.

mobilenet_v3_small's training step on 32x32 images has 24 of the first and 7 of the second.

:func:`small_map_convs` is the pass the training step runs under: inside its block each eligible
``nn.Conv2d`` of the model computes through these products when its input is such a map (on the
CPU, outside torch.compile), and through its own convolution otherwise. It replaces the modules'
``forward`` for the block only, so hooks still fire, and parameters, names, the state dict and
what an exporter traces outside the block are the model as written. Same values up to float
rounding, same gradients (``tests/test_small_maps.py`` compares both with ``nn.Conv2d``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["eligible_convs", "small_map_convs"]

# A depthwise convolution goes through the gathered product while its output pixels x input
# pixels are at most this: at 16 (a 2x2 map, stride 1) it is 1.8x faster than oneDNN, at 64
# (4x4 -> 2x2) 1.6x slower.
MAX_TAPS = 16


def eligible_convs(model: nn.Module) -> dict[nn.Conv2d, str]:
    """The convolutions of ``model`` that a small map can make cheaper, each with its kind:
    ``"pointwise"`` (1x1 kernel, no padding, one group) or ``"depthwise"`` (one filter per
    channel, zero padding, no dilation)."""
    found: dict[nn.Conv2d, str] = {}
    for m in model.modules():
        if type(m) is not nn.Conv2d or m.padding_mode != "zeros" or not isinstance(m.padding, tuple):
            continue  # a subclass may compute something else; 'same'/'valid' strings: left to torch
        if m.kernel_size == (1, 1) and m.groups == 1 and m.padding == (0, 0):
            found[m] = "pointwise"
        elif m.groups == m.in_channels == m.out_channels and m.dilation == (1, 1):
            found[m] = "depthwise"
    return found


def small_map_convs(model: nn.Module, device: torch.device) -> Callable[[], AbstractContextManager]:
    """A factory of the block in which ``model``'s eligible convolutions take the small-map path
    (nothing to do off the CPU, where cuDNN has no such per-call cost, or without such layers)."""
    convs = eligible_convs(model) if device.type == "cpu" else {}
    if not convs:
        return nullcontext
    forwards = [(conv, functools.partial(_FORWARDS[kind], conv)) for conv, kind in convs.items()]

    @contextmanager
    def block() -> Iterator[None]:
        for conv, forward in forwards:
            conv.forward = forward  # an instance attribute: nn.Module.__call__ runs it, hooks and all
        try:
            yield
        finally:
            for conv, _ in forwards:
                conv.__dict__.pop("forward", None)

    return block


def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; a 1x1 map as a matrix product: (N, C, 1, 1) -> (N, C_out, 1, 1)."""
    if x.dim() != 4 or x.shape[2] * x.shape[3] != 1 or x.device.type != "cpu" or torch.compiler.is_compiling():
        return conv._conv_forward(x, conv.weight, conv.bias)
    n, c = x.shape[:2]
    out = F.linear(x.reshape(n, c), conv.weight.reshape(conv.out_channels, c), conv.bias)  # (N, C_out)
    return out.reshape(n, conv.out_channels, 1, 1)


def _depthwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; a map of a few pixels as a weighted sum of its pixels, per channel."""
    # under autocast the convolution would run in its lower precision, which the product would not follow
    plain = x.device.type == "cpu" and x.dtype == conv.weight.dtype and not torch.is_autocast_enabled("cpu")
    taps = None
    if x.dim() == 4 and plain and not torch.compiler.is_compiling():
        taps = _taps(x.shape[2], x.shape[3], conv.kernel_size, conv.stride, conv.padding)
    if taps is None:
        return conv._conv_forward(x, conv.weight, conv.bias)
    index, (out_h, out_w) = taps
    n, c, h, w = x.shape
    kernel = conv.weight.reshape(c, -1)  # (C, kh*kw)
    kernel = torch.cat([kernel, kernel.new_zeros(c, 1)], dim=1)  # the last column: "no tap here" (padding)
    weights = kernel[:, index].permute(1, 2, 0)  # (out pixels, in pixels, C)
    pixels = x.permute(0, 2, 3, 1).reshape(n, 1, h * w, c)  # (N, 1, in pixels, C)
    out = (pixels * weights).sum(dim=2)  # (N, out pixels, C)
    if conv.bias is not None:
        out = out + conv.bias
    return out.reshape(n, out_h, out_w, c).permute(0, 3, 1, 2)  # (N, C, H_out, W_out), channels-last memory


@functools.lru_cache(maxsize=256)
def _taps(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
          ) -> tuple[torch.Tensor, tuple[int, int]] | None:  # fmt: skip
    """Which kernel tap joins each (output pixel, input pixel) of an ``h`` x ``w`` map: a
    ``(out pixels, in pixels)`` index into the flattened kernel, ``kh*kw`` where none does;
    ``None`` where the map is too large for the product to pay (or the output is empty)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    out_h, out_w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if out_h < 1 or out_w < 1 or out_h * out_w * h * w > MAX_TAPS:
        return None
    # input row iy meets output row oy through kernel row iy - oy*sh + ph, when that is in [0, kh)
    ky = torch.arange(h)[None, :] - torch.arange(out_h)[:, None] * sh + ph  # (out_h, h)
    kx = torch.arange(w)[None, :] - torch.arange(out_w)[:, None] * sw + pw  # (out_w, w)
    inside = ((ky >= 0) & (ky < kh))[:, None, :, None] & ((kx >= 0) & (kx < kw))[None, :, None, :]
    index = torch.where(inside, ky[:, None, :, None] * kw + kx[None, :, None, :], kh * kw)  # (oh, ow, h, w)
    return index.reshape(out_h * out_w, h * w), (out_h, out_w)


_FORWARDS: dict[str, Callable[[nn.Conv2d, torch.Tensor], torch.Tensor]] = {
    "pointwise": _pointwise,
    "depthwise": _depthwise,
}
