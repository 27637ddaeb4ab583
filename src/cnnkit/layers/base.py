"""The base of the Keras-style layers: shapes, building, weights in Keras' layout, config.

Shapes here are Keras' shapes without the batch axis, channels last: an image is
``(H, W, C)``, a feature vector ``(F,)``. The tensors that flow through ``forward`` are
torch's ``(B, C, H, W)`` (kept channels-last in memory by the engine), so every layer runs
on torch's own kernels while reporting exactly what Keras reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit import activations
from cnnkit.errors import ConfigError, ShapeError
from cnnkit.layers.symbolic import is_symbolic, symbolic_call

__all__ = ["INITIALIZERS", "Layer", "Shape"]

Shape = tuple[int | None, ...]  # Keras shape without the batch axis

# Keras' initializer names -> torch's in-place initializers. Fans are computed from
# torch's weight layout, which gives Keras' fans for both Conv2D and Dense.
INITIALIZERS = {
    "glorot_uniform": nn.init.xavier_uniform_,
    "glorot_normal": nn.init.xavier_normal_,
    "he_uniform": lambda t: nn.init.kaiming_uniform_(t, nonlinearity="relu"),
    "he_normal": lambda t: nn.init.kaiming_normal_(t, nonlinearity="relu"),
    "lecun_uniform": lambda t: nn.init.kaiming_uniform_(t, nonlinearity="linear"),
    "lecun_normal": lambda t: nn.init.kaiming_normal_(t, nonlinearity="linear"),
    "zeros": nn.init.zeros_,
    "ones": nn.init.ones_,
}


def initialize(tensor: torch.Tensor, name: str) -> None:
    if name not in INITIALIZERS:
        raise ConfigError(f"unknown initializer {name!r}; choose one of: {', '.join(INITIALIZERS)}")
    with torch.no_grad():
        INITIALIZERS[name](tensor)


def pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ConfigError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def check_padding(padding: str) -> str:
    if padding not in ("valid", "same"):
        raise ConfigError(f"padding must be 'valid' or 'same', got {padding!r}")
    return padding


def check_data_format(data_format: str | None) -> None:
    if data_format not in (None, "channels_last"):
        raise ConfigError("cnnkit layers take channels-last arrays (N, H, W, C), as Keras does by default")


def out_length(n: int | None, k: int, stride: int, dilation: int, padding: str) -> int | None:
    """Output length of a convolution or pooling window along one axis (Keras' formula)."""
    if n is None:
        return None
    if padding == "same":
        return math.ceil(n / stride)
    return (n - dilation * (k - 1) - 1) // stride + 1


def same_pads(n: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding: the odd pixel goes at the end (bottom/right)."""
    total = max((math.ceil(n / stride) - 1) * stride + (k - 1) * dilation + 1 - n, 0)
    return total // 2, total - total // 2


class Layer(nn.Module):
    """Base of the Keras-style layers.

    Subclasses define ``compute_output_shape`` (which also validates the input shape),
    ``_build`` (creates parameters) and ``call`` (the computation before the activation).
    """

    def __init__(
        self,
        activation: str | nn.Module | None = None,
        *,
        name: str | None = None,
        input_shape: Sequence[int | None] | None = None,
        trainable: bool = True,
        dtype: str | None = None,
    ) -> None:
        super().__init__()
        dtype = getattr(dtype, "name", dtype)  # a keras.mixed_precision.DTypePolicy, or its name
        if dtype not in (None, "float32"):
            raise ConfigError(
                f"cnnkit layers keep float32 weights, got dtype={dtype!r}; to train in 16 bits, set the whole "
                f"model's policy: keras.mixed_precision.set_global_policy('mixed_bfloat16') before making it"
            )
        # dtype="float32" on a layer keeps it in float32 under a mixed policy, as Keras' guides do for
        # the output layer; without it the layer computes as the model's policy says.
        self.float32 = dtype == "float32"
        self.name = name
        self.activation_name, self.activation = activations.get(activation)
        self.trainable = trainable
        self.input_shape_hint: Shape | None = tuple(input_shape) if input_shape is not None else None
        self.built = False
        self.input_shape: Shape | None = None  # with the batch axis, as Keras shows it
        self.output_shape: Shape | None = None

    # -- shapes and parameters ------------------------------------------------
    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def _build(self, input_shape: Shape) -> None:
        """Create parameters for ``input_shape``; layers without parameters skip it."""

    def build(self, input_shape: Sequence[int | None]) -> Shape:
        """Check ``input_shape`` (Keras', without batch), create parameters, return the output shape."""
        input_shape = tuple(input_shape)
        output_shape = self.compute_output_shape(input_shape)
        self._build(input_shape)
        if not self.trainable:
            self.requires_grad_(False)
        self.built = True
        self.input_shape, self.output_shape = (None, *input_shape), (None, *output_shape)
        return output_shape

    def count_params(self) -> int:
        """All weights, as Keras counts them (BatchNorm's moving statistics included)."""
        return self.count_trainable_params() + self.count_non_trainable_params()

    def count_trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def count_non_trainable_params(self) -> int:
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        stats = sum(b.numel() for b in self.buffers() if b.is_floating_point())
        return frozen + stats

    # -- computation ----------------------------------------------------------
    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.call(x))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Keras' functional API: a layer called on symbolic tensors records a graph node instead
        # of computing (see cnnkit.layers.symbolic); on tensors it is torch's module call.
        if args and is_symbolic(args[0]):
            if len(args) > 1 or kwargs:
                raise ConfigError(f"layer {self.name!r} takes one input (or a list of them for a merge layer)")
            return symbolic_call(self, args[0])
        if self.float32 and torch.is_autocast_enabled(_device_type(args[0])):
            with torch.autocast(_device_type(args[0]), enabled=False):
                return super().__call__(*(_float32(a) for a in args), **kwargs)
        return super().__call__(*args, **kwargs)

    def logits(self, x: Any) -> Any:
        """``call(x)`` without the activation, under the layer's dtype: a model's last layer gives its logits so."""
        if self.float32 and torch.is_autocast_enabled(_device_type(x)):
            with torch.autocast(_device_type(x), enabled=False):
                return self.call(_float32(x))
        return self.call(x)

    # -- Keras compatibility --------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """The layer's weights as NumPy arrays in Keras' layout and order."""
        return []

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Set the weights from NumPy arrays in Keras' layout and order."""
        expected = [w.shape for w in self.get_weights()]
        got = [tuple(np.shape(w)) for w in weights]
        if expected != got:
            raise ShapeError(f"{self.name}: set_weights expected shapes {expected}, got {got}")
        self._set_weights([torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in weights])

    def _set_weights(self, weights: list[torch.Tensor]) -> None:
        pass

    def get_config(self) -> dict[str, Any]:
        """Keras-style config: ``type(self)(**config)`` rebuilds the layer."""
        config: dict[str, Any] = {"name": self.name, "trainable": self.trainable}
        if self.float32:
            config["dtype"] = "float32"
        if "activation" in init_args(type(self)):
            if self.activation_name not in activations.ACTIVATIONS:
                raise ConfigError(f"{self.name}: a custom activation module cannot be saved as config")
            config["activation"] = self.activation_name
        return config

    def extra_repr(self) -> str:
        return f"name={self.name!r}, output_shape={self.output_shape}"


def _device_type(x: torch.Tensor | Sequence[torch.Tensor]) -> str:
    return (x if isinstance(x, torch.Tensor) else x[0]).device.type  # a merge layer takes a list


def _float32(x: Any) -> Any:
    """A layer's input, in float32 (a list of them for a merge layer)."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    return [_float32(t) for t in x] if isinstance(x, (list, tuple)) else x


def init_args(cls: type) -> set[str]:
    return set(cls.__init__.__code__.co_varnames[: cls.__init__.__code__.co_argcount])


def expect_image_shape(layer: Layer, shape: Shape) -> tuple[int | None, int | None, int]:
    if len(shape) != 3:
        kind = type(layer).__name__
        raise ShapeError(
            f"{kind} layer {layer.name!r} expects images (None, height, width, channels), "
            f"got a {len(shape) + 1}-D input {(None, *shape)}"
        )
    return shape  # type: ignore[return-value]
