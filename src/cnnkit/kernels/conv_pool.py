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

:func:`fused_conv_pool` takes tensors and integers (the input, the convolution's weight and
bias, the pooling size, the padding, whether ReLU is fused) and returns ``None`` where no
kernel applies: the caller then runs torch's operators. Results agree with torch's up to float rounding, ties and
NaNs included. Which layers feed them, and when, is the pass :func:`cnnkit.kernels.fuse`'s
business: the layers themselves never call a kernel.
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


def supports(x: torch.Tensor, weight: torch.Tensor, pool: int) -> str | None:
    """Which kernel computes ``max_pool(conv2d(x, weight), pool)``: ``"conv_pool"``, ``"conv_pool_grad"`` or ``None``.

    The convolution is stride-1 and undilated, with one group; the pooling has a square
    ``pool`` x ``pool`` window and stride ``pool``. ``weight`` is ``(filters, channels, K, K)``.
    """
    on_cpu = x.device.type == weight.device.type == "cpu"
    if not on_cpu or x.dtype != torch.float32 or weight.dtype != torch.float32 or x.dim() != 4:
        return None
    if torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return None  # torch.compile traces torch ops, not a ctypes call; autocast wants bf16
    filters, channels, k, k2 = weight.shape
    if not (k == k2 <= 7 and 2 <= pool <= 3 and channels == x.shape[1]):
        return None
    if not x.requires_grad and channels <= _MAX_IN_CHANNELS and filters % 8 == 0:
        return "conv_pool"
    if channels % 8 == 0 and torch.is_grad_enabled():  # without gradients, torch's forward is all there is
        return "conv_pool_grad"
    return None


def fused_conv_pool(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pool: int,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    relu: bool = False,
) -> torch.Tensor | None:
    """``relu?(max_pool(conv2d(pad(x), weight, bias), pool))`` by a C kernel, or ``None`` where none applies.

    Args:
        x: ``(B, C, H, W)`` images or feature maps.
        weight: ``(filters, C, K, K)``; the convolution is stride-1, undilated, one group.
        bias: ``(filters,)`` or ``None``.
        pool: the max pooling's window and stride, ``pool`` x ``pool``.
        padding: zeros around ``x`` before the convolution, ``(left, right, top, bottom)`` as
            ``F.pad`` takes them (TensorFlow's 'same' puts the odd pixel at the bottom/right).
        relu: apply ReLU to the pooled output (else nothing).

    Returns:
        ``(B, filters, H', W')`` in channels-last memory, or ``None``: the caller then computes
        the block with torch's operators. ``None`` also where the kernel cannot be built.
    """
    kernel = supports(x, weight, pool)
    if kernel is None:
        return None
    if any(padding):
        x = F.pad(x, padding)
    batch, channels, height, width = x.shape
    filters, k = weight.shape[0], weight.shape[-1]
    if (height - k + 1) // pool < 1 or (width - k + 1) // pool < 1:
        return None
    if kernel == "conv_pool_grad":
        lib = conv_pool_grad.library(k, channels, filters, pool, height, width)
        return conv_pool_grad.conv_pool_sparse_grad(x, weight, bias, pool, relu, lib) if lib else None
    lib = _library(k, channels, filters, pool, height, width)
    return _ConvPool.apply(x, weight, bias, lib, pool, relu) if lib else None


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
        # The gradients of a scalar: autograd imports sympy (~0.5 s) the first time it is handed `upstream`.
        grads = [torch.autograd.grad((out * upstream).sum(), (weight, bias)) for out in (fused, expected)]
        pairs = [(fused, expected), *zip(*grads)]
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
