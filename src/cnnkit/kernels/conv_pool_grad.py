"""Conv2D -> MaxPooling2D -> activation inside a network: torch's forward, a sparse C backward.

Past the first block a convolution has many input channels and oneDNN's forward runs near the
machine's peak, so the forward stays torch's (convolution, then max pooling with its argmax).
The backward is where time goes: torch turns the pooled gradient into a full-size map that is
zero but at one cell in P*P, then runs two dense backward convolutions over it. The kernel
(conv_pool_grad.c) sends each non-zero gradient straight to the pixels and weights under its
window, a quarter of the arithmetic for 2x2 pooling (less again where ReLU blocks): the
article's second block's backward takes ~4 ms instead of ~13 ms on two cores.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from cnnkit.kernels import build

__all__ = ["conv_pool_sparse_grad", "library"]

_POINTER, _INT = ctypes.c_void_p, ctypes.c_int


def conv_pool_sparse_grad(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: int, relu: bool, lib: ctypes.CDLL
) -> torch.Tensor:
    """``act(max_pool(conv2d(x, weight, bias), p))`` for an unpadded ``x`` ``(B, C, H, W)``."""
    return _ConvPoolGrad.apply(x, weight, bias, p, relu, lib)


def library(k: int, channels: int, filters: int, p: int, height: int, width: int) -> ctypes.CDLL | None:
    """The backward kernel for these shapes, built and checked against torch (``None`` if it cannot be)."""
    shape = {"K": k, "CIN": channels, "CO": filters, "P": p, "H": height, "W": width}
    return build.load("conv_pool_grad.c", shape, check=lambda lib: _check(lib, k, channels, filters, p, height, width))


class _ConvPoolGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, p, relu, lib):
        y, won = F.max_pool2d(F.conv2d(x, weight, bias), p, return_indices=True)  # won: argmax in the conv map
        if relu:
            y = torch.relu(y)
        ctx.save_for_backward(x, weight, y, won)
        ctx.p, ctx.relu, ctx.lib, ctx.has_bias = p, relu, lib, bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, y, won = ctx.saved_tensors
        filters, channels, k, _ = weight.shape
        xh, yh, gh, wonh = _nhwc(x), _nhwc(y), _nhwc(grad_y), _nhwc(won)
        wt = weight.detach().permute(2, 3, 0, 1).contiguous()  # (K, K, filters, C)
        grad_x = torch.empty_like(xh) if ctx.needs_input_grad[0] else None  # (B, H, W, C), written in full
        threads = torch.get_num_threads()
        parts = torch.zeros(threads, k * k * filters * channels + filters)  # per thread: dw then db
        failed = ctx.lib.conv_pool_grad(
            xh.data_ptr(), wt.data_ptr(), yh.data_ptr(), gh.data_ptr(), wonh.data_ptr(),
            grad_x.data_ptr() if grad_x is not None else None, parts.data_ptr(), x.shape[0], int(ctx.relu), threads,
        )  # fmt: skip
        if failed:
            raise MemoryError("out of memory in the backward pass of a convolution block")
        total = parts.sum(0)  # in thread order: repeatable
        grad_weight = total[:-filters].view(k, k, filters, channels).permute(2, 3, 0, 1)
        grad_bias = total[-filters:] if ctx.has_bias else None
        grad_x = grad_x.permute(0, 3, 1, 2) if grad_x is not None else None
        return grad_x, grad_weight, grad_bias, None, None, None


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W, C), contiguous: the kernels' layout (no copy for channels-last)."""
    return t.permute(0, 2, 3, 1).contiguous()


def _check(lib: ctypes.CDLL, k: int, channels: int, filters: int, p: int, height: int, width: int) -> bool:
    """Declare the function's types, then run it once on two random images against torch."""
    lib.conv_pool_grad.argtypes = [_POINTER] * 7 + [_INT] * 3
    lib.conv_pool_grad.restype = ctypes.c_int
    generator = torch.Generator().manual_seed(0)  # not the global one: seeded runs stay as they were
    with torch.inference_mode(False), torch.enable_grad():  # whatever mode the first call came in
        x = torch.randn(2, channels, height, width, generator=generator).requires_grad_()
        weight = torch.randn(filters, channels, k, k, generator=generator).requires_grad_()
        bias = torch.randn(filters, generator=generator).requires_grad_()
        mine = conv_pool_sparse_grad(x, weight, bias, p, True, lib)
        theirs = torch.relu(F.max_pool2d(F.conv2d(x, weight, bias), p))
        upstream = torch.randn(theirs.shape, generator=generator)
        # The gradients of a scalar: autograd imports sympy (~0.5 s) the first time it is handed `upstream`.
        pairs = zip(torch.autograd.grad((mine * upstream).sum(), (x, weight, bias)),
                    torch.autograd.grad((theirs * upstream).sum(), (x, weight, bias)))  # fmt: skip
        return all(torch.allclose(a, b, rtol=1e-3, atol=1e-3) for a, b in pairs)
