"""Keras' ``keras.mixed_precision``: train in bfloat16 or float16 with float32 weights.

    import cnnkit as keras
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = keras.Sequential([...])   # takes the global policy when it is made, as Keras' layers do
    model.compile(...); model.fit(x, y)   # each step's forward pass runs under bfloat16 autocast

A policy names how :meth:`cnnkit.models.Model.fit` runs a step: ``"float32"`` (the default),
``"mixed_bfloat16"`` (autocast to bfloat16: about twice fp32's speed on a GPU, and on a CPU with
native bfloat16 such as AVX512-BF16 or AMX, for convolution-heavy models) or ``"mixed_float16"``
(autocast to float16, with the loss scaling Keras' ``LossScaleOptimizer`` does, applied by the
engine itself). It is the engine's ``precision`` (``cnnkit train --precision bf16``) under
Keras' names. Weights stay float32 under every policy, and so do ``predict``, ``evaluate``
and the model file: cnnkit offers no pure ``"bfloat16"``/``"float16"``/``"float64"`` policy.
"""

from __future__ import annotations

from typing import Any

from cnnkit._keras_names import missing
from cnnkit.errors import ConfigError

__all__ = ["DTypePolicy", "Policy", "dtype_policy", "global_policy", "set_dtype_policy", "set_global_policy"]

# policy name -> the engine's precision (cnnkit.train.settings.PRECISIONS)
_PRECISION = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}
_COMPUTE = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
_NOT_HERE = ("float16", "bfloat16", "float64", "half", "double")


class DTypePolicy:
    """A named precision policy, as Keras' ``DTypePolicy``: its ``compute_dtype`` and ``variable_dtype``."""

    def __init__(self, name: str = "float32") -> None:
        if isinstance(name, DTypePolicy):
            name = name.name
        if name in _NOT_HERE:
            raise ConfigError(
                f"dtype policy {name!r}: cnnkit keeps weights in float32; 'mixed_bfloat16' or 'mixed_float16' "
                f"compute in 16 bits with float32 weights, as Keras' mixed precision does"
            )
        if name not in _PRECISION:
            raise ConfigError(f"unknown dtype policy {name!r}; choose one of: {', '.join(_PRECISION)}")
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def compute_dtype(self) -> str:
        """The dtype of the training step's arithmetic."""
        return _COMPUTE[self._name]

    @property
    def variable_dtype(self) -> str:
        """The dtype of the weights: always float32 in cnnkit."""
        return "float32"

    @property
    def precision(self) -> str:
        """The engine's name for it (``fp32``, ``bf16``, ``fp16``): what ``fit`` trains with."""
        return _PRECISION[self._name]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DTypePolicy) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self._name)

    def __repr__(self) -> str:
        return f'<DTypePolicy "{self._name}">'

    def get_config(self) -> dict[str, Any]:
        return {"name": self._name}


Policy = DTypePolicy  # Keras 2's name, still exported by Keras 3

_global = DTypePolicy("float32")


def set_global_policy(policy: str | DTypePolicy) -> None:
    """Make ``policy`` the one that models made from now on take (Keras' ``set_global_policy``)."""
    global _global
    if policy is None:
        raise ConfigError("set_global_policy() takes a policy name such as 'mixed_bfloat16' or 'float32'")
    _global = DTypePolicy(policy)


def global_policy() -> DTypePolicy:
    """The policy a model made now takes (``float32`` until :func:`set_global_policy`)."""
    return _global


set_dtype_policy = set_global_policy  # Keras 3's aliases
dtype_policy = global_policy


def __getattr__(name: str) -> Any:
    raise missing(__name__, name)
