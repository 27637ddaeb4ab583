"""``Model``: an image classifier with Keras' training API, over any torch module.

``Model(net, input_shape=(32, 32, 3))`` gives any ``nn.Module`` that maps ``(B, C, H, W)``
images to logits Keras' ``compile`` / ``fit`` / ``evaluate`` / ``predict`` (from
:class:`~cnnkit.models.trainer.Trainer`) and ``save``;
:class:`~cnnkit.models.Sequential` is the Keras-layer subclass. As a torch module,
``model(x)`` takes ``(B, C, H, W)`` images in [0, 1] and returns logits; ``predict``
takes Keras' NHWC arrays (or files, PIL images, tensors) and returns probabilities.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cnnkit import mixed_precision
from cnnkit.errors import ConfigError, ShapeError
from cnnkit.layers.symbolic import is_symbolic
from cnnkit.models.summary import print_summary
from cnnkit.models.trainer import Trainer
from cnnkit.runtime import prefer_channels_last
from cnnkit.train import callbacks as callbacks_module

__all__ = ["MODULE_ATTR", "Model"]

# Where a module registered with cnnkit.models.register_module keeps {"name", "module", "kwargs"}.
MODULE_ATTR = "_cnnkit_registered"

Shape = tuple[int | None, ...]


class Model(Trainer, nn.Module):
    """A classifier: a torch module returning logits, plus what travels with it in a model file.

    ``Model(inputs, outputs)`` on Keras tensors is Keras' functional API and gives a
    :class:`~cnnkit.models.functional.Functional` model, as ``keras.Model`` does.
    """

    _functional: type[Model] | None = None  # what Model(inputs, outputs) makes: cnnkit.models.functional's class

    def __init_subclass__(cls, functional_api: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if functional_api:
            Model._functional = cls

    def __new__(cls, *args: Any, **kwargs: Any) -> Model:
        if cls is Model and ((args and is_symbolic(args[0])) or "outputs" in kwargs) and Model._functional:
            return super().__new__(Model._functional)
        return super().__new__(cls)

    def __init__(
        self,
        net: nn.Module | None = None,
        *,
        input_shape: Sequence[int | None] | None = None,
        name: str = "model",
        class_names: Sequence[str] | None = None,
        normalization: dict[str, Sequence[float]] | None = None,
        architecture: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.net = net
        self._image_shape: Shape | None = tuple(input_shape) if input_shape is not None else None
        self.class_names = list(class_names) if class_names else None
        # A white pixel's value in what the model was trained on: 1.0 ([0, 1]) or 255.0 (Keras-style
        # 0..255 pixels); cnnkit's pipeline scales its [0, 1] pixels to it (cnnkit.classifier).
        self.pixel_max = 1.0
        self.architecture = architecture  # how to rebuild the net; see get_config
        self.training_summary: dict[str, Any] = {}
        self.stop_training = False
        self.history: callbacks_module.History | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._compiled: dict[str, Any] | None = None
        # How fit's steps compute: the global policy when the model is made, as Keras' layers take it.
        self._dtype_policy = mixed_precision.global_policy()
        self.set_normalization(normalization)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # A model called on Keras tensors is a layer of a functional model (Keras' nested models).
        if args and is_symbolic(args[0]):
            return self._symbolic_call(args[0], **kwargs)
        return super().__call__(*args, **kwargs)

    def _symbolic_call(self, inputs: Any, **kwargs: Any) -> Any:
        raise ConfigError(
            f"model {self.name!r} wraps a torch module: only Sequential and functional models can be called on "
            f"Keras tensors (keras.Input(...)) as layers"
        )

    # -- what the model takes and gives ----------------------------------------
    @property
    def image_shape(self) -> Shape | None:
        """One input image, Keras-style ``(H, W, C)``."""
        return self._image_shape

    @property
    def dtype_policy(self) -> mixed_precision.DTypePolicy:
        """How ``fit`` computes each step (Keras' ``dtype_policy``); weights stay float32 under any."""
        return self._dtype_policy

    @dtype_policy.setter
    def dtype_policy(self, policy: str | mixed_precision.DTypePolicy) -> None:
        self._dtype_policy = mixed_precision.DTypePolicy(policy)

    @property
    def input_shape(self) -> Shape | None:
        """Keras' ``(None, H, W, C)``."""
        return None if self._image_shape is None else (None, *self._image_shape)

    @property
    def output_activation(self) -> str:
        """What ``predict`` applies to the logits; a wrapped torch module returns logits, so softmax."""
        return "softmax"

    @property
    def normalization(self) -> dict[str, list[float]] | None:
        if self.norm_mean is None:
            return None
        return {"mean": self.norm_mean.flatten().tolist(), "std": self.norm_std.flatten().tolist()}

    def set_normalization(self, normalization: dict[str, Sequence[float]] | None) -> None:
        """Per-channel ``(x - mean) / std`` applied inside ``forward``, so every caller gets it."""
        if normalization is None:
            self.register_buffer("norm_mean", None, persistent=False)
            self.register_buffer("norm_std", None, persistent=False)
            return
        mean = torch.tensor(normalization["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(normalization["std"], dtype=torch.float32).view(1, -1, 1, 1)
        if (std <= 0).any():
            raise ConfigError("normalization std must be positive")
        self.register_buffer("norm_mean", mean, persistent=False)
        self.register_buffer("norm_std", std, persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_mean is None:
            return x
        return (x - self.norm_mean) / self.norm_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images in [0, 1] -> ``(B, classes)`` logits."""
        return self.net(self.normalize(x))

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Fix the input shape ``(H, W, C)``."""
        self._image_shape = tuple(input_shape)

    @property
    def built(self) -> bool:
        return self._image_shape is not None

    def _conform_images(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` checked (building the model from it if needed) and in the weights' floating dtype: float32,
        or float64 for a model made ``.double()``."""
        self._check_images(x)
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)
        return x if x.dtype == dtype or not x.is_floating_point() else x.to(dtype)

    def _check_images(self, x: torch.Tensor) -> None:
        """Build from the first batch if needed; refuse images of another shape."""
        shape = (x.shape[2], x.shape[3], x.shape[1])
        if not self.built:
            self.build(shape)
        expected = self.image_shape
        if any(e is not None and e != s for e, s in zip(expected, shape)):
            raise ShapeError(
                f"model {self.name!r} takes images of shape {(None, *expected)}, got {(None, *shape)} "
                f"(arrays are (N, height, width, channels))"
            )

    def _num_outputs(self) -> int:
        if self.class_names:
            return len(self.class_names)
        shape = self.image_shape
        with torch.no_grad():
            probe = torch.zeros(1, shape[2], shape[0] or 32, shape[1] or 32, device=self._device())
            was_training = self.training
            self.eval()
            out = self(probe).shape[1]
            self.train(was_training)
        return out

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    # -- weights, config, files ----------------------------------------------------
    def count_params(self) -> int:
        """Trainable and non-trainable weights, BatchNorm statistics included (as Keras counts)."""
        return sum(p.numel() for p in self.parameters()) + sum(
            b.numel() for name, b in self.named_buffers() if b.is_floating_point() and not name.startswith("norm_")
        )

    def to_json(self, **kwargs: Any) -> str:
        """Keras' ``to_json``: the architecture (:meth:`get_config`) as JSON; ``models.model_from_json`` reads it."""
        return json.dumps(self.get_config(), **kwargs)

    def get_config(self) -> dict[str, Any]:
        """The architecture, as stored in a model file (``model_from_config`` rebuilds it).

        A wrapped torch module is stored by name when its class is decorated with
        :func:`cnnkit.models.register_module`: ``{"class_name": "module", "config": {"name",
        "module", "kwargs"}}``, its constructor's arguments as JSON. Never code.
        """
        if self.architecture is not None:
            return self.architecture
        net = self.net
        recorded = net.__dict__.get(MODULE_ATTR) if net is not None else None
        if recorded is None:
            cls = type(net)
            raise ConfigError(
                f"model {self.name!r} wraps {cls.__qualname__} (module {cls.__module__}), which cnnkit cannot "
                f"rebuild from a file: decorate the class with @cnnkit.models.register_module() (its constructor "
                f"arguments must be JSON values) and save() again, or export it for predict and serve with "
                f"cnnkit.export.export_model(model, 'onnx', out='model.onnx'), or keep only the weights with "
                f"save_weights()"
            )
        try:
            json.dumps(recorded["kwargs"], allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"model {self.name!r}: {recorded['name']} was built with arguments that are not JSON values "
                f"({e}); pass numbers, strings, lists or dicts so a file can record them"
            ) from None
        return {"class_name": "module", "config": recorded}

    def save(self, filepath: str | os.PathLike) -> None:
        """Write the model (weights and everything needed to rebuild it) to one ``.safetensors`` file.

        :func:`cnnkit.models.load_model` reads it back; every field below is put back there.
        """
        from cnnkit.modelfile import write_model_file

        metadata = {
            "name": self.name,
            "architecture": self.get_config(),
            "class_names": self.class_names,
            "input_shape": list(self.image_shape) if self.image_shape is not None else None,
            "normalization": self.normalization,
            "pixel_max": self.pixel_max,
            "output_activation": self.output_activation,
            "compile": self.compile_config(),
            "training": self.training_summary,
        }
        write_model_file(filepath, self.state_dict(), metadata)

    def save_weights(self, filepath: str | os.PathLike) -> None:
        """Write only the weights, as a plain safetensors state dict."""
        from safetensors.torch import save_model

        from cnnkit._io import atomic_write

        atomic_write(filepath, lambda tmp: save_model(self, tmp))

    def load_weights(self, filepath: str | os.PathLike) -> None:
        """Load weights written by ``save_weights`` (or a model file).

        As after ``load_model`` and ``fit``, a convolutional model's weights are then channels-last,
        the layout it predicts and trains fastest in on a CPU (mobilenet_v3_small's ``predict``: 4.5x);
        their values are the file's.
        """
        from cnnkit.modelfile import read_weights

        self.load_state_dict(read_weights(filepath))  # copies into the model's tensors, keeping their layout
        prefer_channels_last(self)

    def summary_rows(self) -> list[tuple[str, str, str, int]]:
        """``(name, type, output shape, params)`` per top-level block, from one forward pass."""
        if not self.built or any(n is None for n in self.image_shape):
            raise ShapeError("summary() needs the model's input shape: build it or fit it first")
        h, w, c = self.image_shape
        rows: list[tuple[str, str, str, int]] = []
        hooks = [
            child.register_forward_hook(
                lambda mod, inp, out, name=name: rows.append(
                    (name, type(mod).__name__, _keras_shape(out), sum(p.numel() for p in mod.parameters()))
                )
            )
            for name, child in self.net.named_children()
        ]
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad():
                self(torch.zeros(1, c, h, w, device=self._device()))
        finally:
            self.train(was_training)
            for hook in hooks:
                hook.remove()
        return rows

    def summary(self, print_fn: Any = None) -> None:
        """Print Keras' summary table: layer (type), output shape, parameters, totals."""
        print_summary(self, print_fn)


def _keras_shape(out: Any) -> str:
    if not isinstance(out, torch.Tensor):
        return "?"
    shape = tuple(out.shape[1:])
    if len(shape) == 3:  # (C, H, W) -> Keras' (H, W, C)
        shape = (shape[1], shape[2], shape[0])
    return str((None, *shape))
