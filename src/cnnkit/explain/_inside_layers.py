"""What kind of layer a module is, for the inside view: its role, a one-line description, its weights.

Roles group Keras layers and torch modules that do the same job, so a ``Sequential`` model and
a torchvision network are drawn alike: ``conv``, ``activation``, ``pool``, ``norm``, ``dense``,
``flatten``, ``dropout``, ``other``.
"""

from __future__ import annotations

from torch import nn

__all__ = ["MAP_ROLES", "describe", "is_conv", "layer_params", "layer_role", "passes_channels"]

# The layers whose feature maps the view shows: what the article talks about.
MAP_ROLES = ("conv", "activation", "pool")

_TORCH_ROLES: tuple[tuple[str, tuple[type[nn.Module], ...]], ...] = (
    ("conv", (nn.Conv2d,)),
    ("pool", (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)),
    (
        "activation",
        (
            nn.ReLU,
            nn.ReLU6,
            nn.LeakyReLU,
            nn.PReLU,
            nn.ELU,
            nn.SELU,
            nn.CELU,
            nn.GELU,
            nn.SiLU,
            nn.Mish,
            nn.Sigmoid,
            nn.Tanh,
            nn.Hardswish,
            nn.Hardsigmoid,
            nn.Hardtanh,
            nn.Softplus,
            nn.Softmax,
        ),
    ),  # fmt: skip
    ("norm", (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)),
    ("dense", (nn.Linear,)),
    ("flatten", (nn.Flatten,)),
    ("dropout", (nn.Dropout, nn.Dropout2d)),
)


def _keras_role(module: nn.Module) -> str | None:
    from cnnkit import layers

    kinds = (
        ("conv", (layers.Conv2D,)),
        ("pool", (layers.MaxPooling2D, layers.AveragePooling2D, layers.GlobalAveragePooling2D,
                  layers.GlobalMaxPooling2D)),
        ("activation", (layers.Activation,)),
        ("norm", (layers.BatchNormalization,)),
        ("dense", (layers.Dense,)),
        ("flatten", (layers.Flatten,)),
        ("dropout", (layers.Dropout,)),
    )  # fmt: skip
    return next((role for role, types in kinds if isinstance(module, types)), None)


def layer_role(module: nn.Module) -> str:
    """``conv``, ``activation``, ``pool``, ``norm``, ``dense``, ``flatten``, ``dropout`` or ``other``."""
    role = _keras_role(module)
    if role is not None:
        return role
    return next((role for role, types in _TORCH_ROLES if isinstance(module, types)), "other")


def is_conv(module: nn.Module) -> bool:
    return layer_role(module) == "conv"


def passes_channels(module: nn.Module, role: str) -> bool:
    """Whether output channel k comes from input channel k alone (so from the same filter upstream)."""
    return role in ("activation", "pool", "norm", "dropout") or isinstance(module, nn.Identity)


def layer_params(module: nn.Module) -> int:
    """Weights and float buffers (BatchNorm's running statistics), as Keras counts a layer's parameters."""
    count = getattr(module, "count_params", None)
    if callable(count):  # a Keras layer counts itself
        return int(count())
    return sum(p.numel() for p in module.parameters()) + sum(
        b.numel() for b in module.buffers() if b.is_floating_point()
    )


def _pair(value: object) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def _size(value: object) -> str:
    a, b = _pair(value)
    return f"{a}x{b}"


def describe(module: nn.Module) -> str:
    """A short line on what the layer does: ``32 filters 3x3, relu``, ``max 2x2``, ``64 units``."""
    role = layer_role(module)
    activation = getattr(module, "activation_name", "linear")
    suffix = f", {activation}" if activation != "linear" and role != "activation" else ""
    if role == "conv":
        conv = getattr(module, "conv", module)
        text = f"{conv.out_channels} filters {_size(conv.kernel_size)}"
        stride = _pair(getattr(module, "strides", conv.stride))
        if stride != (1, 1):
            text += f", stride {stride[0] if stride[0] == stride[1] else _size(stride)}"
        if conv.groups > 1:
            text += ", depthwise" if conv.groups == conv.in_channels else f", {conv.groups} groups"
        if getattr(module, "padding", None) == "same":
            text += ", same padding"
        return text + suffix
    if role == "pool":
        if hasattr(module, "pool_size"):  # Keras
            return f"{getattr(module, 'mode', 'max')} {_size(module.pool_size)}"
        if hasattr(module, "keepdims"):
            return "global " + ("average" if "Average" in type(module).__name__ else "max")
        if hasattr(module, "output_size"):
            kind = "average" if "Avg" in type(module).__name__ else "max"
            return f"adaptive {kind} to {_size(module.output_size)}"
        kind = "average" if "Avg" in type(module).__name__ else "max"
        return f"{kind} {_size(module.kernel_size)}, stride {_size(module.stride)}"
    if role == "activation":  # a Keras Activation layer names its function; a torch module's class does
        return activation if activation != "linear" else ""
    if role == "dense":
        units = getattr(module, "units", None) or getattr(module, "out_features", "?")
        return f"{units} units{suffix}"
    if role == "dropout":
        rate = getattr(module, "rate", None)
        return f"rate {rate if rate is not None else getattr(module, 'p', '?')}"
    if role == "norm":
        return "normalizes each channel"
    return suffix.removeprefix(", ")
