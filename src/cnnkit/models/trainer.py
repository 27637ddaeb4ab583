"""Keras' training API of :class:`~cnnkit.models.Model`: ``compile``, ``fit``, ``evaluate``, ``predict``.

A mixin, as Keras 3 keeps its ``Trainer`` apart from its ``Layer``: :mod:`cnnkit.models.model` says
what a model is (its net, input shape, classes, normalization, files); this module says how Keras'
API trains and runs it, through cnnkit's engine (:func:`cnnkit.train.loop.fit`) and its evaluation.
It uses what ``Model`` defines (``image_shape``, ``output_activation``, ``pixel_max``, ``class_names``,
``_conform_images``, ``_num_outputs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cnnkit.classifier import class_count, pixel_range
from cnnkit.data.transforms import images_to_tensor, to_batch
from cnnkit.errors import ConfigError, DataError
from cnnkit.evaluate import evaluate_tensors, predict_logits, resolve_metrics
from cnnkit.kernels import fuse
from cnnkit.models._fit_inputs import dataset_arrays, run_batch, to_labels
from cnnkit.runtime import resolve_device
from cnnkit.train import callbacks as callbacks_module
from cnnkit.train import loop, losses, optimizers
from cnnkit.train.progress import format_logs
from cnnkit.train.settings import TrainSettings

__all__ = ["Trainer"]


class Trainer:
    """``compile`` / ``fit`` / ``evaluate`` / ``predict`` with Keras' arguments and answers."""

    def compile(
        self,
        optimizer: str | optimizers.Optimizer = "rmsprop",
        loss: str | losses.Loss | None = None,
        metrics: Sequence[Any] | None = None,
        **unsupported: Any,
    ) -> None:
        """Choose the optimizer, loss and metrics, by Keras name or object."""
        for name in ("jit_compile", "run_eagerly", "steps_per_execution", "auto_scale_loss"):
            unsupported.pop(name, None)  # how Keras runs its graph: cnnkit's engine always runs eagerly, step by step
        if unsupported:
            raise ConfigError(f"compile() does not support: {', '.join(unsupported)}")
        spec = optimizers.get(optimizer)
        loss_obj = losses.get(loss) if loss is not None else None
        if loss_obj is not None and self.built:
            losses.resolve(loss_obj, self.output_activation)  # report a mismatch now, not at fit
        self._compiled = {"optimizer": spec, "loss": loss_obj, "metrics": resolve_metrics(metrics)}
        self.optimizer = None  # rebuilt for the current parameters at the next fit

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def compile_config(self) -> dict[str, Any] | None:
        """The compile arguments as JSON-able config (stored in the model file)."""
        if self._compiled is None:
            return None
        loss = self._compiled["loss"]
        return {
            "optimizer": self._compiled["optimizer"].get_config(),
            "loss": loss.get_config() if loss is not None else None,
            "metrics": list(self._compiled["metrics"]),
        }

    def _loss_fn(self, class_weight: dict[int, float] | None = None) -> losses.LossFn:
        if self._compiled is None or self._compiled["loss"] is None:
            raise ConfigError("compile the model with a loss first: model.compile(optimizer='adam', loss=...)")
        weights = None
        if class_weight:
            weights = torch.ones(max(max(class_weight) + 1, self._num_outputs()))
            for label, weight in class_weight.items():
                weights[int(label)] = float(weight)
        return losses.resolve(self._compiled["loss"], self.output_activation, weights)

    def _check_labels(self, y: torch.Tensor) -> None:
        if y.ndim != 1 or len(y) == 0:
            return
        classes = self._num_outputs()
        if classes == 1 and self.output_activation == "sigmoid":
            classes = 2  # a one-unit binary classifier: labels 0 and 1
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise DataError(f"labels must be in 0..{classes - 1} for this model's {classes} outputs, got {low}..{high}")

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        epochs: int = 1,
        verbose: int | str = "auto",
        callbacks: Sequence[callbacks_module.Callback] | None = None,
        validation_split: float = 0.0,
        validation_data: tuple[Any, Any] | None = None,
        shuffle: bool = True,
        class_weight: dict[int, float] | None = None,
        initial_epoch: int = 0,
    ) -> callbacks_module.History:
        """Train on NHWC images ``x`` and labels ``y``, as Keras' ``fit``; returns a History."""
        if self._compiled is None:
            raise ConfigError("call model.compile(optimizer=..., loss=..., metrics=[...]) before fit()")
        folder_classes = None
        if hasattr(x, "as_arrays"):  # a dataset: its batch size and shuffling, as Keras takes them from it
            batch_size, shuffle = batch_size or x.batch_size, shuffle and x.shuffle
            folder_classes = getattr(x, "class_names", None)
        x, y = dataset_arrays(x, y, "fit")
        if validation_data is not None and hasattr(validation_data, "as_arrays"):
            validation_data = validation_data.as_arrays()
        if x is None or y is None:
            raise ConfigError("fit() needs images x and labels y")
        x_t, y_t = images_to_tensor(x), to_labels(y)
        if len(x_t) != len(y_t):
            raise DataError(f"fit() got {len(x_t)} images but {len(y_t)} labels")
        x_t = self._conform_images(x_t)
        device = resolve_device("auto")
        self.to(device)
        self._check_labels(y_t)
        if folder_classes and self.class_names is None and len(folder_classes) == class_count(self._num_outputs()):
            self.class_names = list(folder_classes)  # so the saved model's predict and serve answer with them
        self.pixel_max = pixel_range(x_t, self.pixel_max)
        if validation_data is not None:
            validation = (self._conform_images(images_to_tensor(validation_data[0])), to_labels(validation_data[1]))
        elif validation_split:
            # Keras holds out the *last* fraction of the arrays, before shuffling.
            cut = len(x_t) - int(len(x_t) * validation_split)
            validation = (x_t[cut:], y_t[cut:])
            x_t, y_t = x_t[:cut], y_t[:cut]
        else:
            validation = None
        if self.optimizer is None:
            self.optimizer = self._compiled["optimizer"].build(self.parameters())
        self.history = loop.fit(
            self, (x_t, y_t),
            loss_fn=self._loss_fn(class_weight), optimizer=self.optimizer, epochs=epochs,
            batch_size=batch_size or 32, validation=validation, metrics=self._compiled["metrics"],
            callbacks=list(callbacks or []), settings=TrainSettings(precision=self.dtype_policy.precision),
            shuffle=shuffle, initial_epoch=initial_epoch,
            verbose=1 if verbose == "auto" else int(verbose),
        )  # fmt: skip
        return self.history

    def evaluate(
        self, x: Any = None, y: Any = None, batch_size: int | None = None, verbose: int | str = "auto",
        return_dict: bool = False,
    ) -> float | list[float] | dict[str, float]:  # fmt: skip
        """Loss and metrics on ``(x, y)``: ``loss, acc = model.evaluate(x, y)`` as in Keras; x as for predict."""
        x, y = dataset_arrays(x, y, "evaluate")
        x_t, y_t = to_batch(x, self.image_shape), to_labels(y)
        x_t = self._conform_images(x_t)
        batch = run_batch(batch_size or 32, x_t)
        results = evaluate_tensors(fuse(self), x_t, y_t, self._loss_fn(), self._compiled["metrics"], batch)
        if verbose not in (0, "0"):
            Console(highlight=False, markup=False).print(format_logs(results))
        if return_dict:
            return results
        return results["loss"] if len(results) == 1 else list(results.values())

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = "auto") -> np.ndarray:
        """Probabilities ``(N, classes)`` for images ``x`` (rows sum to 1 after softmax).

        ``x``: Keras' NHWC arrays, or anything :func:`~cnnkit.data.transforms.to_batch` takes
        (image files, PIL images, ``(N, C, H, W)`` tensors, lists of them).
        """
        x, _ = dataset_arrays(x, None, "predict")  # a dataset: its images, in its file order
        x_t = to_batch(x, self.image_shape, pixel_max=self.pixel_max)  # files: decoded to the model's range
        x_t = self._conform_images(x_t)
        logits = predict_logits(fuse(self), x_t, run_batch(batch_size or 32, x_t))
        logits = logits if logits.dtype == torch.float64 else logits.float()  # a .double() model answers in float64
        if self.output_activation == "softmax":
            logits = torch.softmax(logits, dim=1)
        elif self.output_activation == "sigmoid":  # (N, 1) probabilities of class 1, as Keras' binary classifier
            logits = torch.sigmoid(logits)
        return logits.cpu().numpy()
