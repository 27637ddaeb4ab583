"""Conv2D -> MaxPooling2D -> activation blocks as C kernels on the CPU.

Two kernels, picked by the block's input:

- The model's input (one to four channels, no gradient needed): the whole block in one pass
  (conv_pool.c). oneDNN runs such convolutions at a fraction of the machine's speed: the work
  per output is tiny next to writing the full-resolution feature map, which pooling then reads
  back and shrinks; the backward pass zero-fills and scatters a map just as large. The kernel
  keeps each pooling window's convolutions in registers and writes only the pooled output: the
  article's first block takes ~2 ms instead of ~7 ms per step of 128 images on two cores.
- Deeper blocks (a multiple of 8 input channels): torch's forward, and a backward that uses the
  pooling's sparsity (:mod:`cnnkit.kernels.conv_pool_grad`): ~4 ms instead of ~13 ms for the
  article's second block.

``Sequential`` calls :func:`fused_conv_pool` for each Conv2D -> MaxPooling2D pair (its
activation moved after the pooling), in training and in prediction (where the first kernel's
forward is what speeds it up), and runs the layers as usual where it returns ``None``: results
agree with torch's operators up to float rounding, ties and NaNs included. Layers with hooks
(feature maps, Grad-CAM) and traced graphs (ONNX, TorchScript) always run the layers.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from cnnkit.kernels import build, conv_pool_grad

__all__ = ["fused_conv_pool", "supports"]

_MAX_IN_CHANNELS = 4  # the first-block kernel's limit: with more, its convolution is compute-bound
_POINTER, _INT = ctypes.c_void_p, ctypes.c_int


def supports(conv, pool, x: torch.Tensor) -> str | None:
    """Which kernel can compute ``pool(conv(x))``: ``"conv_pool"``, ``"conv_pool_grad"`` or ``None``."""
    from cnnkit.layers import Conv2D, MaxPooling2D  # layers import this package's callers

    if not (isinstance(conv, Conv2D) and isinstance(pool, MaxPooling2D) and conv.built):
        return None
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
        return None
    if torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return None  # torch.compile traces torch ops, not a ctypes call; autocast wants bf16
    k, p = conv.kernel_size, pool.pool_size
    block = (
        k[0] == k[1] <= 7
        and conv.strides == (1, 1) and conv.dilation_rate == (1, 1) and conv.groups == 1
        and conv.padding in ("valid", "same")
        and p[0] == p[1] and 2 <= p[0] <= 3 and pool.strides == p and pool.padding == "valid"
    )  # fmt: skip
    channels = x.shape[1]
    if not block:
        return None
    if not x.requires_grad and channels <= _MAX_IN_CHANNELS and conv.filters % 8 == 0:
        return "conv_pool"
    if channels % 8 == 0 and torch.is_grad_enabled():  # without gradients, torch's forward is all there is
        return "conv_pool_grad"
    return None


def fused_conv_pool(conv, pool, x: torch.Tensor, activation: str) -> torch.Tensor | None:
    """``act(pool(conv(x)))`` with ReLU fused (``activation="relu"``) or none (``"linear"``).

    ``x`` is ``(B, C, H, W)``; the result is ``(B, filters, H', W')`` in channels-last memory.
    Returns ``None`` when no kernel applies or it cannot be built: the caller then runs the
    layers itself.
    """
    kernel = supports(conv, pool, x) if activation in ("relu", "linear") else None
    if kernel is None:
        return None
    k, p = conv.kernel_size[0], pool.pool_size[0]
    if conv.padding == "same":  # TensorFlow's: the odd pixel at the bottom/right
        total = k - 1
        x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
    batch, channels, height, width = x.shape
    if (height - k + 1) // p < 1 or (width - k + 1) // p < 1:
        return None
    bias = conv.conv.bias if conv.use_bias else None
    relu = activation == "relu"
    if kernel == "conv_pool_grad":
        lib = conv_pool_grad.library(k, channels, conv.filters, p, height, width)
        return conv_pool_grad.conv_pool_sparse_grad(x, conv.conv.weight, bias, p, relu, lib) if lib else None
    lib = _library(k, channels, conv.filters, p, height, width)
    return _ConvPool.apply(x, conv.conv.weight, bias, lib, p, relu) if lib else None


def _library(k: int, channels: int, filters: int, p: int, height: int, width: int) -> ctypes.CDLL | None:
    shape = {"K": k, "CIN": channels, "CO": filters, "P": p, "H": height, "W": width}
    return build.load("conv_pool.c", shape, check=lambda lib: _check(lib, k, channels, filters, p, height, width))


def _check(library: ctypes.CDLL, k: int, channels: int, filters: int, p: int, height: int, width: int) -> bool:
    """Declare the functions' types, then run them once on two random images against torch."""
    library.conv_pool_forward.argtypes = [_POINTER] * 5 + [_INT] * 3
    library.conv_pool_backward.argtypes = [_POINTER] * 5 + [_INT] * 3
    library.conv_pool_forward.restype = library.conv_pool_backward.restype = None
    generator = torch.Generator().manual_seed(0)  # not the global one: seeded runs stay as they were
    with torch.inference_mode(False), torch.enable_grad():  # whatever mode the first call came in
        x = torch.rand(2, channels, height, width, generator=generator)
        weight = torch.randn(filters, channels, k, k, generator=generator).requires_grad_()
        bias = torch.randn(filters, generator=generator).requires_grad_()
        fused = _ConvPool.apply(x, weight, bias, library, p, True)
        expected = torch.relu(F.max_pool2d(F.conv2d(x, weight, bias), p))
        upstream = torch.randn(expected.shape, generator=generator)
        pairs = [(fused, expected)] + list(zip(torch.autograd.grad(fused, (weight, bias), upstream),
                                               torch.autograd.grad(expected, (weight, bias), upstream)))  # fmt: skip
    return all(torch.allclose(mine, theirs, rtol=1e-3, atol=1e-3) for mine, theirs in pairs)


class _ConvPool(torch.autograd.Function):
    """The fused block's forward and its weight and bias gradients (the input needs none)."""

    @staticmethod
    def forward(ctx, x, weight, bias, library, p, relu):
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
