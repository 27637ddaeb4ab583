"""The autocast a training step runs under, and the layers it keeps in float32.

bf16 autocast on a CPU with native bfloat16 (AVX512-BF16, AMX) trains convolution-heavy models
about twice as fast as float32 (``benchmarks/zoo_speed.py``). One kind of layer is the exception:
oneDNN's bfloat16 backward of a depthwise convolution (``groups == in_channels``, MobileNet's and
EfficientNet's) is 5-25x slower than its float32 one at the small, strided shapes those models
have (measured with torch 2.14: a 5x5 stride-2 depthwise conv on 128x96x4x4, 25 ms vs 0.9 ms),
which made mobilenet_v3_small train at half its float32 speed. So on the CPU
:func:`step_autocast` runs depthwise convolutions in float32 inside the bf16 region, as Keras
lets a layer keep ``dtype="float32"``; every other layer autocasts as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn

__all__ = ["float32_depthwise_convs", "step_autocast"]


def float32_depthwise_convs(model: nn.Module) -> list[nn.Module]:
    """The depthwise 2-D convolutions of ``model`` (one filter group per input channel)."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]


def step_autocast(
    model: nn.Module, device: torch.device, dtype: torch.dtype | None, *, keep_depthwise: bool = True
) -> Callable[[], AbstractContextManager]:
    """A factory of the context a training step's forward runs in: nothing for fp32, else autocast to
    ``dtype``, with the depthwise convolutions in float32 when that is bf16 on the CPU (and
    ``keep_depthwise``)."""
    if dtype is None:
        return nullcontext
    on_cpu_bf16 = device.type == "cpu" and dtype == torch.bfloat16
    kept = float32_depthwise_convs(model) if on_cpu_bf16 and keep_depthwise else []
    if not kept:
        return lambda: torch.autocast(device.type, dtype=dtype)

    @contextmanager
    def autocast() -> Iterator[None]:
        with torch.autocast(device.type, dtype=dtype), _in_float32(kept, device.type):
            yield

    return autocast


@contextmanager
def _in_float32(modules: list[nn.Module], device_type: str) -> Iterator[None]:
    """Run ``modules`` with autocast off and float32 inputs, for the duration of the block.

    A pre-hook turns autocast off and casts the input, the forward hook turns it back on. Hooks,
    not wrapper modules, so the model's parameters, names and state dict stay as they are; they
    live only inside the block. (Should a forward raise between the two hooks, the enclosing
    autocast's exit restores the autocast state anyway.)
    """
    open_regions: list[torch.autocast] = []

    def before(module: nn.Module, args: tuple) -> tuple:
        region = torch.autocast(device_type, enabled=False)
        region.__enter__()
        open_regions.append(region)
        return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    def after(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        open_regions.pop().__exit__(None, None, None)

    handles = [h for m in modules for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
