"""Conv2D -> activation -> MaxPooling2D on the input images, as one fused C kernel on the CPU.

The first block of the article's CNN (and of most small Keras-style CNNs) convolves images that
have one or three channels. oneDNN runs such convolutions at a fraction of the machine's speed:
the work per output is tiny next to writing the full-resolution feature map, which pooling then
reads back and shrinks; the backward pass zero-fills and scatters a map just as large. The fused
kernel (conv_pool.c) keeps each pooling window's convolutions in registers and writes only the
pooled output: on two CPU cores the block's forward and backward take ~2 ms instead of ~7 ms,
a third of the article's CNN's training step.

It is used by ``Sequential`` in training when :func:`fused_conv_pool` says the layers and the
input fit (else the layers run as usual, with the same results up to float rounding):
CPU float32 images that need no gradient (the model's input), a stride-1 'valid' or 'same'
convolution with a multiple of 8 filters and at most 4 input channels, a square max pooling
whose stride is its size, and a monotone activation.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from cnnkit.kernels import build

__all__ = ["fused_conv_pool", "supports"]

_MAX_IN_CHANNELS = 4  # with more, the convolution is compute-bound and oneDNN is the faster
_POINTER, _INT = ctypes.c_void_p, ctypes.c_int


def supports(conv, pool, x: torch.Tensor) -> bool:
    """Whether the fused kernel can compute ``pool(conv(x))`` (before any build is tried)."""
    from cnnkit.layers import Conv2D, MaxPooling2D  # layers import this package's callers

    if not (isinstance(conv, Conv2D) and isinstance(pool, MaxPooling2D) and conv.built):
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4 or x.requires_grad:
        return False
    if torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return False  # torch.compile traces torch ops, not a ctypes call; autocast wants bf16
    k, p = conv.kernel_size, pool.pool_size
    channels = x.shape[1]
    return (
        k[0] == k[1] <= 7
        and conv.strides == (1, 1) and conv.dilation_rate == (1, 1) and conv.groups == 1
        and conv.padding in ("valid", "same")
        and 1 <= channels <= _MAX_IN_CHANNELS and conv.filters % 8 == 0
        and p[0] == p[1] and 2 <= p[0] <= 3 and pool.strides == p and pool.padding == "valid"
    )  # fmt: skip


def fused_conv_pool(conv, pool, x: torch.Tensor, activation: str) -> torch.Tensor | None:
    """``act(pool(conv(x)))`` with ReLU fused (``activation="relu"``) or none (``"linear"``).

    ``x`` is ``(B, C, H, W)``; the result is ``(B, filters, H', W')`` in channels-last memory.
    Returns ``None`` when the kernel does not apply or cannot be built: the caller then runs the
    layers itself.
    """
    if activation not in ("relu", "linear") or not supports(conv, pool, x):
        return None
    k, p = conv.kernel_size[0], pool.pool_size[0]
    if conv.padding == "same":  # TensorFlow's: the odd pixel at the bottom/right
        total = k - 1
        x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
    batch, channels, height, width = x.shape
    if (height - k + 1) // p < 1 or (width - k + 1) // p < 1:
        return None
    library = _library(k, channels, conv.filters, p, height, width)
    if library is None:
        return None
    bias = conv.conv.bias if conv.use_bias else None
    return _ConvPool.apply(x, conv.conv.weight, bias, library, p, activation == "relu")


def _library(k: int, channels: int, filters: int, p: int, height: int, width: int) -> ctypes.CDLL | None:
    library = build.load("conv_pool.c", {"K": k, "CIN": channels, "CO": filters, "P": p, "H": height, "W": width})
    if library is not None and not hasattr(library, "_cnnkit_typed"):
        library.conv_pool_forward.argtypes = [_POINTER] * 5 + [_INT] * 3
        library.conv_pool_forward.restype = None
        library.conv_pool_backward.argtypes = [_POINTER] * 5 + [_INT] * 3
        library.conv_pool_backward.restype = None
        library._cnnkit_typed = True
    return library


class _ConvPool(torch.autograd.Function):
    """The fused block's forward and its weight and bias gradients (the input needs none)."""

    @staticmethod
    def forward(ctx, x, weight, bias, library, p, relu):  # noqa: D401 - torch's signature
        filters, channels, k, _ = weight.shape
        batch, _, height, width = x.shape
        threads = torch.get_num_threads()  # share torch's OpenMP team: the same libgomp
        xh = x.detach().permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
        wh = weight.detach().permute(2, 3, 1, 0).contiguous()  # (K, K, C, filters)
        b = bias.detach().contiguous() if bias is not None else torch.zeros(filters)
        out_h, out_w = (height - k + 1) // p, (width - k + 1) // p
        y = torch.empty(batch, out_h, out_w, filters)  # (B, H', W', filters)
        won = torch.empty(batch, out_h, out_w, filters, dtype=torch.uint8)  # which window cell won
        library.conv_pool_forward(xh.data_ptr(), wh.data_ptr(), b.data_ptr(), y.data_ptr(), won.data_ptr(),
                                  batch, int(relu), threads)  # fmt: skip
        ctx.save_for_backward(xh, y, won)
        ctx.library, ctx.relu, ctx.has_bias, ctx.taps = library, relu, bias is not None, (k, channels)
        return y.permute(0, 3, 1, 2)  # (B, filters, H', W'), channels-last memory

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        xh, y, won = ctx.saved_tensors
        k, channels = ctx.taps
        batch, filters = y.shape[0], y.shape[3]
        gh = grad_y.permute(0, 2, 3, 1).contiguous()  # (B, H', W', filters)
        threads = torch.get_num_threads()
        # per thread: dw then db; zeros, as OpenMP may run fewer threads than asked (or the build none)
        parts = torch.zeros(threads, k * k * channels * filters + filters)
        ctx.library.conv_pool_backward(xh.data_ptr(), y.data_ptr(), gh.data_ptr(), won.data_ptr(), parts.data_ptr(),
                                       batch, int(ctx.relu), threads)  # fmt: skip
        total = parts.sum(0)  # in thread order: repeatable
        grad_weight = total[:-filters].view(k, k, channels, filters).permute(3, 2, 0, 1)
        grad_bias = total[-filters:] if ctx.has_bias else None
        return None, grad_weight, grad_bias, None, None, None
