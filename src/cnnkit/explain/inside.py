"""The inside view: what every layer of a CNN makes of one image, with the numbers to show it.

.. code-block:: python

    view = explain.inside(model, image)         # one forward pass with a hook on every layer
    for layer in view.layers:                    # in the order they ran
        print(layer.name, layer.kind, layer.output_shape, layer.params)
    view.layer("conv2d").maps.maps               # (n, h, w): its most active feature maps
    view.first_conv.output(5, 0, 0)              # filter 5's multiply-and-sum at the top-left

The article's story, layer by layer: convolutions find edges and textures (their feature
maps), pooling shrinks the maps, the dense layers turn features into class probabilities.
:func:`inside` returns each layer's name, kind, output shape (Keras order) and parameter
count; the feature maps of every convolution, activation and pooling layer; the values of
every flat layer; the probabilities; and the first convolution at work: its kernels and the
patch of input it slides over, exactly as it saw it (normalized, padded), so that the
multiply-and-sum can be redone with the actual numbers.

The result stays small for any model: at most ``max_channels`` maps per layer (the most
active ones), maps averaged down to ``max_size`` pixels a side, and ``max_values`` map values
in all, shared by the layers. What is left out is said in each layer's ``notes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit import activations
from cnnkit.errors import ConfigError
from cnnkit.explain._inside_layers import MAP_ROLES, describe, is_conv, layer_params, layer_role, passes_channels
from cnnkit.explain._layers import HOOK_LOCK, class_scores, eval_mode, named_layers, prepare_image

__all__ = ["ConvAtWork", "FeatureMaps", "Inside", "LayerInside", "inside"]


@dataclass(frozen=True)
class FeatureMaps:
    """Some of one layer's feature maps for one image."""

    maps: np.ndarray  # (n, h, w) float32: the channels shown, most active first
    channels: np.ndarray  # (n,) int64: their indices in the layer's output
    activity: np.ndarray  # (n,) float32: mean |activation| of each, over the full-size map
    total: int  # channels in the layer's output
    full_size: tuple[int, int]  # (H, W) of the layer's output, before averaging down

    @property
    def downsampled(self) -> bool:
        return tuple(self.maps.shape[1:]) != tuple(self.full_size)


@dataclass(frozen=True)
class LayerInside:
    """One layer, as the inside view shows it."""

    name: str
    kind: str  # its class: Conv2D, MaxPooling2D, BatchNorm2d, ...
    role: str  # conv, activation, pool, norm, dense, flatten, dropout or other
    output_shape: tuple[int, ...]  # Keras order, no batch axis: (H, W, C) or (F,)
    params: int
    detail: str  # "32 filters 3x3, relu", "max 2x2", "64 units"
    maps: FeatureMaps | None = None  # conv, activation and pooling layers with a spatial output
    values: np.ndarray | None = None  # a flat output's first values
    values_total: int = 0  # how many values the flat output has
    source: str | None = None  # the convolution whose filters made these channels (same index)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConvAtWork:
    """The first convolution sliding over its input, with the numbers it multiplies and adds.

    ``patch`` is the input as the convolution saw it (after the model's normalization and the
    convolution's own padding), cut to the windows of ``positions`` output pixels starting at
    output pixel ``origin``; the full output is ``output_size``.
    """

    layer: str
    kernels: np.ndarray  # (F, C / groups, kh, kw) float32
    bias: np.ndarray  # (F,) float32 (zeros without a bias)
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    activation: str  # applied to the sum inside the layer (Keras' Conv2D(activation=...)); "linear": none
    patch: np.ndarray  # (C, ph, pw) float32
    origin: tuple[int, int]  # (row, col) of the output pixel of the patch's first window
    positions: tuple[int, int]  # output rows and columns the patch covers
    output_size: tuple[int, int]  # (H, W) of the whole output
    normalized: bool  # whether the model normalized the pixels before this convolution

    def window(self, filter_index: int, row: int, col: int) -> np.ndarray:
        """The ``(C / groups, kh, kw)`` input values under the kernel at patch position ``(row, col)``."""
        if not (0 <= row < self.positions[0] and 0 <= col < self.positions[1]):
            raise ConfigError(f"position ({row}, {col}) is outside the patch's {self.positions} windows")
        per_group = self.kernels.shape[1]
        first = (filter_index // (len(self.kernels) // self.groups)) * per_group  # its group's first channel
        kh, kw = self.kernels.shape[2:]
        top, left = row * self.stride[0], col * self.stride[1]
        rows = slice(top, top + self.dilation[0] * (kh - 1) + 1, self.dilation[0])
        cols = slice(left, left + self.dilation[1] * (kw - 1) + 1, self.dilation[1])
        return self.patch[first : first + per_group, rows, cols]

    def output(self, filter_index: int, row: int, col: int) -> float:
        """One output value by hand: the window times the kernel, summed, plus the bias, activated."""
        products = self.window(filter_index, row, col) * self.kernels[filter_index]  # (C / groups, kh, kw)
        z = float(products.sum(dtype=np.float64)) + float(self.bias[filter_index])
        if self.activation not in activations.ACTIVATIONS:
            return z
        return float(activations.get(self.activation)[1](torch.tensor([z], dtype=torch.float64))[0])


@dataclass(frozen=True)
class Inside:
    """Everything the inside view shows for one image: see :func:`inside`."""

    model: str
    image: np.ndarray  # (C, H, W) in [0, 1]: the image as the model saw it
    layers: list[LayerInside]
    probabilities: np.ndarray  # (classes,)
    class_names: list[str]
    first_conv: ConvAtWork | None
    notes: tuple[str, ...] = ()

    @property
    def predicted(self) -> int:
        return int(self.probabilities.argmax())

    def layer(self, name: str) -> LayerInside:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ConfigError(f"no layer {name!r}; the layers are: {', '.join(la.name for la in self.layers)}")


@dataclass
class _Seen:
    """What a hook kept of one layer's output: small summaries only, never the whole tensor."""

    shape: tuple[int, ...]  # Keras order
    maps: torch.Tensor | None = None  # (n, h, w): up to max_channels channels, most active first, averaged down
    channels: torch.Tensor | None = None
    activity: torch.Tensor | None = None
    full_size: tuple[int, int] = (0, 0)
    values: torch.Tensor | None = None
    values_total: int = 0


@dataclass
class _Limits:
    max_channels: int
    max_size: int
    max_values: int
    max_vector: int
    max_patch: int


@dataclass
class _Run:
    seen: dict[str, _Seen] = field(default_factory=dict)  # in the order the layers first ran
    channels_last: bool = False  # between torchvision's Permute([0, 2, 3, 1]) and its inverse (ConvNeXt)
    conv_input: tuple[str, torch.Tensor] | None = None  # the first convolution to run, and its input


def inside(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    *,
    max_channels: int = 64,
    max_size: int = 32,
    max_values: int = 1_000_000,
    max_vector: int = 1024,
    max_patch: int = 64,
) -> Inside:
    """Every layer's output for one image, bounded in size; see the module docstring.

    Args:
        model: a classifier (a ``Sequential`` model, a registered model, any ``nn.Module``).
        image: one image, as for :func:`~cnnkit.explain.gradcam`.
        max_channels: most feature maps kept per layer (the most active: highest mean |activation|).
        max_size: longest side of a kept map; larger maps are averaged down (area interpolation).
        max_values: most feature-map values in all; each layer with maps gets an equal share,
            and keeps as many of its most active channels as fit in it (at least one).
        max_vector: most values kept of a flat (dense) layer's output.
        max_patch: longest side of the first convolution's input patch (the windows it shows).
    """
    limits = _Limits(max_channels, max_size, max_values, max_vector, max_patch)
    for name, value in vars(limits).items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    modules = named_layers(model, "all")  # a Sequential model's Keras layers, else every conv and leaf module
    x = prepare_image(model, image)  # (1, C, H, W)
    with HOOK_LOCK, eval_mode(model), torch.no_grad():
        run, logits = _run(model, modules, x, limits)
    probabilities = torch.softmax(logits.float(), dim=1)[0].cpu()  # (classes,)
    names = list(getattr(model, "class_names", None) or []) or [str(i) for i in range(len(probabilities))]
    order = list(modules) if _is_sequential(model) else list(run.seen)  # else: the order they ran
    layers = _assemble(model, modules, order, run, probabilities, limits)
    first = None if run.conv_input is None else _conv_at_work(model, modules, *run.conv_input, limits)
    notes = []
    if not any(layer.maps is not None for layer in layers):
        notes.append("no layer of this model outputs feature maps (C, H, W)")
    return Inside(
        model=str(getattr(model, "name", type(model).__name__)),
        image=x[0].float().cpu().numpy(),
        layers=layers,
        probabilities=probabilities.numpy(),
        class_names=names,
        first_conv=first,
        notes=tuple(notes),
    )


def _is_sequential(model: nn.Module) -> bool:
    return isinstance(getattr(model, "layers", None), nn.ModuleList)


def _run(
    model: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor, limits: _Limits
) -> tuple[_Run, torch.Tensor]:
    """One forward pass; each layer's first output is summarized as it is produced.

    Summarizing in the hook (rather than keeping outputs) keeps memory flat on a large model
    and reads each output before an in-place operation downstream (``ReLU(inplace=True)``)
    can overwrite it.
    """
    run = _Run()

    def on_output(name: str, role: str):  # noqa: ANN202
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            dims = getattr(module, "dims", None)
            if type(module).__name__ == "Permute" and dims is not None:
                run.channels_last = list(dims) == [0, 2, 3, 1]
            if name not in run.seen and isinstance(output, torch.Tensor):
                run.seen[name] = _summarize(output.detach(), role, run.channels_last, limits)

        return hook

    def on_conv_input(name: str):  # noqa: ANN202
        def hook(module: nn.Module, inputs: tuple) -> None:
            if run.conv_input is None and inputs and isinstance(inputs[0], torch.Tensor):
                run.conv_input = (name, inputs[0].detach()[:1].clone())  # (1, C, H, W)

        return hook

    handles = [module.register_forward_hook(on_output(n, layer_role(module))) for n, module in modules.items()]
    handles += [
        getattr(module, "conv", module).register_forward_pre_hook(on_conv_input(n))
        for n, module in modules.items()
        if is_conv(module)
    ]
    try:
        logits = class_scores(model, x)  # (1, classes)
    finally:
        for handle in handles:
            handle.remove()
    return run, logits


def _summarize(output: torch.Tensor, role: str, channels_last: bool, limits: _Limits) -> _Seen:
    """The shape of one output and, by its role, its most active maps or its first values."""
    out = output[0].float()  # drop the batch axis
    if out.ndim == 3 and channels_last:
        out = out.permute(2, 0, 1)  # (H, W, C) -> (C, H, W)
    if out.ndim == 3:
        channels, height, width = out.shape
        seen = _Seen(shape=(height, width, channels))
        if role in MAP_ROLES:
            activity = out.abs().mean(dim=(1, 2))  # (C,)
            order = torch.argsort(-activity, stable=True)[: limits.max_channels]  # most active first
            maps = out[order]  # (n, H, W)
            scale = min(1.0, limits.max_size / max(height, width))
            if scale < 1.0:  # average, not subsample: a small map still shows where the activity is
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                maps = F.interpolate(maps[None], size=size, mode="area")[0]
            seen.maps, seen.channels, seen.activity = maps.cpu(), order.cpu(), activity[order].cpu()
            seen.full_size = (height, width)
        return seen
    flat = out.flatten()
    seen = _Seen(shape=tuple(out.shape))
    if out.ndim == 1:
        seen.values, seen.values_total = flat[: limits.max_vector].cpu().clone(), flat.numel()
    return seen


def _assemble(
    model: nn.Module,
    modules: dict[str, nn.Module],
    order: list[str],
    run: _Run,
    probabilities: torch.Tensor,
    limits: _Limits,
) -> list[LayerInside]:
    """The layer list: shapes, parameters, maps within the budget, and where each channel came from."""
    with_maps = [name for name in order if name in run.seen and run.seen[name].maps is not None]
    share = limits.max_values // max(1, len(with_maps))
    layers: list[LayerInside] = []
    source: tuple[str, int] | None = None  # the last convolution, and its channels, still traceable
    for name in order:
        module = modules[name]
        role = layer_role(module)
        seen = run.seen.get(name)
        if seen is None and name == order[-1] and _is_sequential(model):
            # A Sequential model's last layer runs outside its hook when it ends in softmax (the
            # loss wants logits): its Keras output is the probabilities (one unit: class 1's).
            final = probabilities[-model.output_shape[-1] :]
            seen = _Seen(shape=(len(final),), values=final[: limits.max_vector])
            seen.values_total = len(final)
        keras_shape = getattr(module, "output_shape", None)
        shape = tuple(keras_shape[1:]) if keras_shape is not None else seen.shape if seen else ()
        channels = shape[-1] if len(shape) == 3 else None
        if is_conv(module):
            source = (name, channels)
        elif source is not None and not (passes_channels(module, role) and channels == source[1]):
            source = None
        maps, notes = _budgeted(seen, share) if seen is not None else (None, [])
        if seen is None:
            notes.append("did not run for this image")
        elif seen.values is not None and seen.values_total > len(seen.values):
            notes.append(f"the first {len(seen.values)} of {seen.values_total} values")
        layers.append(
            LayerInside(
                name=name,
                kind=type(module).__name__,
                role=role,
                output_shape=tuple(int(n) for n in shape),
                params=layer_params(module),
                detail=describe(module),
                maps=maps,
                values=None if seen is None or seen.values is None else seen.values.numpy(),
                values_total=0 if seen is None else seen.values_total,
                source=source[0] if source is not None and maps is not None else None,
                notes=tuple(notes),
            )
        )
    return layers


def _budgeted(seen: _Seen, share: int) -> tuple[FeatureMaps | None, list[str]]:
    """The most active maps that fit in ``share`` values (at least one), and notes on what was left out."""
    if seen.maps is None:
        return None, []
    total = seen.shape[2]
    height, width = seen.maps.shape[1:]
    n = max(1, min(len(seen.maps), share // (height * width)))
    notes = []
    if n < total:
        notes.append(f"the {n} most active of {total} channels")
    if (height, width) != seen.full_size:
        notes.append(f"maps averaged down from {seen.full_size[0]}x{seen.full_size[1]} to {height}x{width}")
    maps = FeatureMaps(
        maps=seen.maps[:n].numpy().astype(np.float32, copy=False),
        channels=seen.channels[:n].numpy().astype(np.int64),
        activity=seen.activity[:n].numpy().astype(np.float32),
        total=total,
        full_size=seen.full_size,
    )
    return maps, notes


def _conv_at_work(
    model: nn.Module, modules: dict[str, nn.Module], name: str, conv_input: torch.Tensor, limits: _Limits
) -> ConvAtWork:
    """The first convolution's kernels and the centre of its (padded) input, cut to ``max_patch`` pixels."""
    module = modules[name]
    conv: nn.Conv2d = getattr(module, "conv", module)  # a Keras Conv2D keeps its nn.Conv2d as .conv
    kh, kw = conv.kernel_size
    stride, dilation = tuple(conv.stride), tuple(conv.dilation)
    padded = _pad_like(conv, conv_input)[0].float()  # (C, Hp, Wp)
    extent = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)  # the input one window spans
    output_size = tuple((n - e) // s + 1 for n, e, s in zip(padded.shape[1:], extent, stride))
    # As many output positions as fit in max_patch input pixels a side (at least one), centred.
    fit = tuple(max(1, (limits.max_patch - e) // s + 1) for e, s in zip(extent, stride))
    positions = tuple(min(o, f) for o, f in zip(output_size, fit))
    origin = tuple((o - p) // 2 for o, p in zip(output_size, positions))
    top, left = origin[0] * stride[0], origin[1] * stride[1]
    rows = (positions[0] - 1) * stride[0] + extent[0]
    cols = (positions[1] - 1) * stride[1] + extent[1]
    weight = conv.weight.detach().float().cpu()  # (F, C / groups, kh, kw)
    bias = conv.bias.detach().float().cpu() if conv.bias is not None else torch.zeros(len(weight))
    return ConvAtWork(
        layer=name,
        kernels=weight.numpy(),
        bias=bias.numpy(),
        stride=stride,
        dilation=dilation,
        groups=conv.groups,
        activation=getattr(module, "activation_name", "linear"),
        patch=padded[:, top : top + rows, left : left + cols].cpu().numpy(),
        origin=origin,
        positions=positions,
        output_size=output_size,
        normalized=getattr(model, "norm_mean", None) is not None,
    )


def _pad_like(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``x`` padded as ``conv`` pads it before sliding (its ``padding`` and ``padding_mode``)."""
    padding = conv.padding
    if isinstance(padding, str):  # "valid", or "same" (stride 1): the odd pixel at the end, as torch does
        totals = [0, 0] if padding == "valid" else [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        pads = (totals[1] // 2, totals[1] - totals[1] // 2, totals[0] // 2, totals[0] - totals[0] // 2)
    else:
        pads = (padding[1], padding[1], padding[0], padding[0])  # (left, right, top, bottom)
    if not any(pads):
        return x
    if conv.padding_mode == "zeros":
        return F.pad(x, pads)
    return F.pad(x, pads, mode=conv.padding_mode)
