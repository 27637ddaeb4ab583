"""Merge layers of the functional API: ``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum``,
``Minimum`` and ``Concatenate``, as Keras' (a list of tensors in, one out)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from cnnkit.errors import ConfigError, ShapeError
from cnnkit.layers.base import Layer, Shape

__all__ = ["Add", "Average", "Concatenate", "Maximum", "Minimum", "Multiply", "Subtract"]


class _Merge(Layer):
    """Elementwise merge of same-shape inputs (Keras broadcasts only equal shapes here, so does cnnkit)."""

    def _shapes(self, input_shape: Any) -> list[Shape]:
        if not (isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple))):
            raise ShapeError(f"{type(self).__name__} layer {self.name!r} takes a list of at least 2 tensors")
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) < 2:
            raise ShapeError(f"{type(self).__name__} layer {self.name!r} takes a list of at least 2 tensors")
        return shapes

    def compute_output_shape(self, input_shape: Any) -> Shape:
        shapes = self._shapes(input_shape)
        if any(s != shapes[0] for s in shapes):
            shown = ", ".join(str((None, *s)) for s in shapes)
            raise ShapeError(f"{type(self).__name__} layer {self.name!r} needs inputs of one shape, got {shown}")
        return shapes[0]

    def build(self, input_shape: Sequence[Any]) -> Shape:
        output_shape = self.compute_output_shape(input_shape)
        self.built = True
        self.input_shape = [(None, *s) for s in self._shapes(input_shape)]  # type: ignore[assignment]
        self.output_shape = (None, *output_shape)
        return output_shape

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        if not isinstance(xs, (list, tuple)) or len(xs) < 2:
            raise ConfigError(f"{type(self).__name__} takes a list of at least 2 tensors")
        return self.activation(self.call(xs))

    def call(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return functools.reduce(self._op, xs)

    @staticmethod
    def _op(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Add(_Merge):
    """``Add()([a, b])``: elementwise sum (a residual connection)."""

    _op = staticmethod(torch.add)


class Multiply(_Merge):
    """``Multiply()([a, b])``: elementwise product."""

    _op = staticmethod(torch.mul)


class Maximum(_Merge):
    """``Maximum()([a, b])``: elementwise maximum."""

    _op = staticmethod(torch.maximum)


class Minimum(_Merge):
    """``Minimum()([a, b])``: elementwise minimum."""

    _op = staticmethod(torch.minimum)


class Average(_Merge):
    """``Average()([a, b])``: elementwise mean."""

    def call(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return functools.reduce(torch.add, xs) / len(xs)


class Subtract(_Merge):
    """``Subtract()([a, b])``: ``a - b`` (exactly two inputs)."""

    def compute_output_shape(self, input_shape: Any) -> Shape:
        if len(self._shapes(input_shape)) != 2:
            raise ShapeError(f"Subtract layer {self.name!r} takes exactly 2 tensors")
        return super().compute_output_shape(input_shape)

    def call(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return xs[0] - xs[1]


class Concatenate(_Merge):
    """``Concatenate(axis=-1)([a, b])``: join along an axis (channels by default, Keras' axis numbering)."""

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = axis

    def _keras_axis(self, rank: int) -> int:
        axis = self.axis if self.axis >= 0 else rank + 1 + self.axis  # rank without the batch axis
        if not 1 <= axis <= rank:
            raise ShapeError(f"Concatenate layer {self.name!r}: axis {self.axis} is out of range for rank {rank + 1}")
        return axis

    def compute_output_shape(self, input_shape: Any) -> Shape:
        shapes = self._shapes(input_shape)
        rank = len(shapes[0])
        axis = self._keras_axis(rank) - 1
        others = {tuple(n for i, n in enumerate(s) if i != axis) for s in shapes}
        if any(len(s) != rank for s in shapes) or len(others) != 1:
            shown = ", ".join(str((None, *s)) for s in shapes)
            raise ShapeError(
                f"Concatenate layer {self.name!r} needs inputs that differ only along axis {self.axis}, got {shown}"
            )
        sizes = [s[axis] for s in shapes]
        joined = None if any(n is None for n in sizes) else sum(sizes)
        return tuple(joined if i == axis else n for i, n in enumerate(shapes[0]))

    def call(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        rank = xs[0].ndim - 1
        axis = self._keras_axis(rank)
        if rank == 3:  # Keras' (H, W, C) axes 1, 2, 3 are torch's (C, H, W) dims 2, 3, 1
            axis = {1: 2, 2: 3, 3: 1}[axis]
        return torch.cat(list(xs), dim=axis)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}
