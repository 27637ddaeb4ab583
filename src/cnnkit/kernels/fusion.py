"""``fuse(model)``: the pass that runs a Sequential's Conv2D -> MaxPooling2D blocks fast.

``Sequential.forward`` runs the layers as written, so what a hook, a tracer (ONNX,
TorchScript) or an explanation sees is the model as written. The engine (each training step,
each epoch's validation) and the predictors (``Model.predict``/``evaluate``, ``cnnkit
evaluate``, ``--backend torch``) run ``fuse(model)`` instead: a module that shares the model's
parameters, buffers and train/eval mode and computes the same values, with two changes in each
block of a layer with a monotone activation followed by ``MaxPooling2D``:

1. Pool first: ``max(f(a), f(b)) = f(max(a, b))`` for a monotone ``f``, so the activation runs
   after the pooling, on a quarter of the values (the same gradients up to ties): ~6% of the
   article's model's CPU training step.
2. C kernels (:mod:`cnnkit.kernels.conv_pool`): a Conv2D block of the shapes they compute goes
   through them where its input allows (float32 on the CPU, outside autocast and
   torch.compile) and through torch's operators where not: 1.7x on the article's model's
   training step, ~3x its prediction (with channels-last).

The rules, all here:

- ``fuse`` returns ``model`` itself where nothing applies: not a built Sequential of cnnkit
  layers (duck-typed: ``layers``, ``normalize``, ``output_activation``), called while
  torch.compile traces, no such block, or a hook on the model itself (or a global module
  hook): such a hook sees the model's own forward. On any device the blocks run pool-first;
  the C kernels only take CPU tensors, which each call checks.
- Hooks on layers: a block with a hook (forward, forward-pre or backward) on either of its
  layers or on any module inside one (its ``nn.Conv2d``, its activation) is left as written, its
  layers run as modules; the other blocks are fused. Layers outside blocks always run as
  modules, hooks and all.
- All of that is decided when ``fuse`` is called; call it again after changing the
  model's layers or hooking one of its blocks. Only what depends on the input is decided per
  call, in :func:`~cnnkit.kernels.conv_pool.fused_conv_pool`: device, dtype, whether the input
  needs a gradient (which kernel), autocast and torch.compile.
- ``fuse`` remembers its answer on the model (``Model.predict`` calls it every time; building
  it again cost ~60 us) and gives it back while the model's modules are the same objects with
  the same hooks: a layer added, replaced or hooked (or a hook removed) makes it decide again.
  Nothing else needs to: the fused steps read each layer's weights, bias and configuration at
  every call, so ``fit`` (which updates the weights in place), ``load_weights``, ``to()``
  (device, dtype, channels-last) and replaced ``Parameter`` objects are all seen.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from cnnkit.kernels.conv_pool import fused_conv_pool
from cnnkit.layers import Conv2D, Layer, MaxPooling2D

__all__ = ["Fused", "fuse", "kernel_arguments"]

# Activations f that commute with max pooling: max(f(a), f(b)) = f(max(a, b)) for monotone f.
_MONOTONE = frozenset({"linear", "relu", "relu6", "leaky_relu", "elu", "selu", "sigmoid", "tanh"})
# torch's registry of global module hooks: one fires on every module's call
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")  # fmt: skip

Step = Callable[[torch.Tensor], torch.Tensor]
# Where fuse() keeps its last answer on a model: (the modules' identities and hook flags, the answer).
_CACHE = "_cnnkit_fused"


def fuse(model: nn.Module) -> nn.Module:
    """The model's fast path: a :class:`Fused` module over its parameters, or ``model`` itself.

    Args:
        model: any module; only a built ``Sequential`` of cnnkit layers on the CPU is fused.

    Returns:
        A module computing what ``model`` computes (logits, up to float rounding) that trains
        the model's own parameters, or ``model`` where nothing applies (see the module's rules).
    """
    if torch.compiler.is_compiling() or any(getattr(torch_module, name, None) for name in _GLOBAL_HOOKS):
        return model  # torch.compile traces the model as written; a global hook must see its own call
    layers = _sequential_layers(model)
    if layers is None:
        return model
    modules = tuple(model.modules())
    key = (tuple(map(id, modules)), tuple(map(_hooked, modules)))
    cached = model.__dict__.get(_CACHE)
    if cached is not None and cached[0] == key:
        return cached[1]
    fused = _fuse(model, layers, {m for m in modules if _hooked(m)})
    model.__dict__[_CACHE] = (key, fused)  # in __dict__, not a submodule: state_dict() and modules() never see it
    return fused


def _fuse(model: nn.Module, layers: list[Layer], hooked: set[nn.Module]) -> nn.Module:
    if model in hooked:
        return model  # the hook must see the model's own call
    body, last = layers[:-1], layers[-1]
    steps: list[Step] = []
    blocks: list[str] = []
    i = 0
    while i < len(body):
        layer = body[i]
        following = body[i + 1] if i + 1 < len(body) else None
        if isinstance(following, MaxPooling2D) and _poolable(layer, following, hooked):
            steps.append(_block(layer, following))
            blocks.append(f"{layer.name}+{following.name}")
            i += 2
        else:
            steps.append(layer)  # as written: the module, with its hooks
            i += 1
    if not blocks:
        return model
    steps.append(last.call if model.output_activation != "linear" else last)  # logits, as forward returns
    return Fused(model, steps, blocks)


def kernel_arguments(conv: Layer, pool: Layer) -> dict[str, Any] | None:
    """What :func:`~cnnkit.kernels.conv_pool.fused_conv_pool` takes for ``pool(conv(x))``, from the layers.

    ``{"pool": P, "padding": (left, right, top, bottom)}``, or ``None`` where the kernels do
    not compute such a block (strides, dilation, groups, a non-square or too large window,
    a pooling stride other than its size, 'same' pooling).
    """
    if not (isinstance(conv, Conv2D) and isinstance(pool, MaxPooling2D) and conv.built):
        return None
    k, p = conv.kernel_size, pool.pool_size
    if not (
        k[0] == k[1] <= 7
        and conv.strides == (1, 1) and conv.dilation_rate == (1, 1) and conv.groups == 1
        and p[0] == p[1] and 2 <= p[0] <= 3 and pool.strides == p and pool.padding == "valid"
    ):  # fmt: skip
        return None
    total = k[0] - 1 if conv.padding == "same" else 0  # TensorFlow's 'same': the odd pixel at the bottom/right
    return {"pool": p[0], "padding": (total // 2, total - total // 2) * 2}


class Fused(nn.Module):
    """A Sequential run with its blocks fused (see :func:`fuse`): the model's parameters and mode, not a copy.

    The model is its only child, so ``parameters()``, ``to()``, ``train()`` and DDP act on the
    model itself; ``training`` *is* the model's flag, so code that saves and restores a mode
    (``predict_logits``) restores the model's.
    """

    def __init__(self, model: nn.Module, steps: Sequence[Step], blocks: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.blocks = tuple(blocks)  # "conv2d+max_pooling2d", ...: what runs fused
        self._steps = tuple(steps)  # a plain tuple: the layers stay registered in the model only

    @property
    def training(self) -> bool:  # type: ignore[override]
        model = self.__dict__.get("_modules", {}).get("model")
        return model.training if model is not None else True

    @training.setter
    def training(self, mode: bool) -> None:
        model = self.__dict__.get("_modules", {}).get("model")
        if model is not None:  # nn.Module.__init__ sets it before there is a model
            model.training = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> logits, as the model's forward."""
        x = self.model.normalize(x)
        for step in self._steps:
            x = step(x)
        return x

    def extra_repr(self) -> str:
        return f"blocks={', '.join(self.blocks)}"


class _PoolFirst:
    """``layer -> MaxPooling2D``, the layer's activation after the pooling, on torch's operators."""

    def __init__(self, layer: Layer, pool: MaxPooling2D) -> None:
        self.layer, self.pool = layer, pool

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.activation(self.pool.call(self.layer.call(x)))


class _ConvPoolKernel(_PoolFirst):
    """``Conv2D -> MaxPooling2D`` through a C kernel where the input allows, else pool-first on torch."""

    def __init__(self, conv: Conv2D, pool: MaxPooling2D, arguments: dict[str, Any]) -> None:
        super().__init__(conv, pool)
        self.conv = conv.conv  # its weight and bias are read at each call: they may be replaced (to(), EMA)
        self.size, self.padding = arguments["pool"], arguments["padding"]
        self.relu = conv.activation_name == "relu"  # fused into the kernel
        # another monotone activation runs after the kernel's pooled output
        self.after = None if conv.activation_name in ("relu", "linear") else conv.activation

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = fused_conv_pool(x, self.conv.weight, self.conv.bias, self.size, self.padding, self.relu)
        if y is None:
            return super().__call__(x)
        return y if self.after is None else self.after(y)


def _block(layer: Layer, pool: MaxPooling2D) -> Step:
    arguments = kernel_arguments(layer, pool)
    return _PoolFirst(layer, pool) if arguments is None else _ConvPoolKernel(layer, pool, arguments)


def _poolable(layer: Layer, pool: MaxPooling2D, hooked: set[nn.Module]) -> bool:
    """Whether ``layer -> pool`` may run pool-first: a monotone activation, a plain pooling, no hook on either."""
    return (
        layer.activation_name in _MONOTONE
        and pool.activation_name == "linear"  # a pooling with its own activation runs as written
        and not (hooked and any(m in hooked for m in itertools.chain(layer.modules(), pool.modules())))
    )


def _sequential_layers(model: nn.Module) -> list[Layer] | None:
    """A built Sequential's layers (by what it has: ``layers``, ``normalize``, ``output_activation``), else None."""
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not layers or not all(isinstance(m, Layer) for m in layers):
        return None
    if hasattr(model, "inputs"):  # a functional model: a graph, not a stack to fuse in order
        return None
    if not callable(getattr(model, "normalize", None)) or getattr(model, "output_activation", None) is None:
        return None
    return list(layers) if all(layer.built for layer in layers) else None


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)  # fmt: skip
