"""Keras names cnnkit cannot mean the same by: one table, and the one error each raises.

Code written for Keras stops at the first name cnnkit lacks. Each cnnkit module that stands for
a Keras module (``cnnkit.callbacks`` for ``keras.callbacks``, ...) ends in a module-level
``__getattr__`` that calls :func:`missing`: the error names the Keras API on that line and what
to use instead (from :data:`INSTEAD`), or lists what the module does have. A leaf module (it
imports only the errors), so the engine's modules can use it too.
"""

from __future__ import annotations

import sys

from cnnkit.errors import CnnkitError

__all__ = ["INSTEAD", "KERAS_MODULES", "KerasNameError", "keras_name", "missing"]

# cnnkit module -> the Keras module it stands for.
KERAS_MODULES = {
    "cnnkit": "keras",
    "cnnkit.layers": "keras.layers",
    "cnnkit.models": "keras.models",
    "cnnkit.datasets": "keras.datasets",
    "cnnkit.utils": "keras.utils",
    "cnnkit.train.keras_callbacks": "keras.callbacks",
    "cnnkit.train.optimizers": "keras.optimizers",
    "cnnkit.train.schedules": "keras.optimizers.schedules",
    "cnnkit.train.losses": "keras.losses",
    "cnnkit.evaluate.keras_metrics": "keras.metrics",
    "cnnkit.mixed_precision": "keras.mixed_precision",
}

_TF_DATA = "pass NumPy arrays, or keras.utils.image_dataset_from_directory(...)'s result, to fit/evaluate/predict"
_TORCH = "cnnkit runs on PyTorch: use torch's operator of that name inside a torch module, wrapped with " \
         "cnnkit.models.Model(module, input_shape=...)"  # fmt: skip
_ZOO = "cnnkit.models.create_model(name, num_classes=..., in_channels=..., input_size=...) builds cnnkit's " \
       "registered architectures (`cnnkit models` lists them; resnet18, resnet50, mobilenet_v3_small, " \
       "efficientnet_b0, convnext_tiny, vgg16, ...), and `cnnkit train --weights imagenet` fine-tunes them"  # fmt: skip

# Keras name -> what to use instead (names cnnkit cannot mean the same by).
INSTEAD: dict[str, str] = {
    "keras.ops": _TORCH,
    "keras.backend": "cnnkit has one backend, PyTorch: use torch directly (torch.tensor, torch.float32, ...)",
    "keras.random": "use torch's random functions (torch.rand, torch.randn) and keras.utils.set_random_seed",
    "keras.applications": _ZOO,
    "keras.preprocessing": "use keras.utils.image_dataset_from_directory, load_img and img_to_array, or "
    "cnnkit's augmentation (`cnnkit train --augment flip+affine`)",  # fmt: skip
    "keras.mixed_precision.LossScaleOptimizer": "under 'mixed_float16' cnnkit's fit scales the loss itself: "
    "pass the optimizer as it is",  # fmt: skip
    "keras.distribution": "run the same script under torchrun: `torchrun --nproc-per-node N -m cnnkit train ...`",
    "keras.export": "cnnkit.export.export_model(model, 'onnx', out='model.onnx') or `cnnkit export`",
    "keras.quantizers": "`cnnkit export --quantize int8` writes an INT8 ONNX model with its accuracy change",
    "keras.regularizers": "use weight_decay= in the optimizer (AdamW, SGD), as torch does",
    "keras.constraints": "cnnkit has no weight constraints; clip in a callback's on_epoch_end if you need one",
    "keras.Function": _TORCH,
    "keras.Variable": _TORCH,
    "keras.datasets.imdb": "cnnkit is for images: keras.datasets.mnist, fashion_mnist, cifar10 and cifar100 "
    "are here, and `cnnkit datasets` lists every image data set",  # fmt: skip
    "keras.datasets.reuters": "cnnkit is for images: `cnnkit datasets` lists its data sets",
    "keras.datasets.boston_housing": "cnnkit is for images: `cnnkit datasets` lists its data sets",
    "keras.datasets.california_housing": "cnnkit is for images: `cnnkit datasets` lists its data sets",
    "keras.utils.text_dataset_from_directory": "cnnkit is for images: keras.utils.image_dataset_from_directory",
    "keras.utils.timeseries_dataset_from_array": "cnnkit is for images: keras.utils.image_dataset_from_directory",
    "keras.utils.audio_dataset_from_directory": "cnnkit is for images: keras.utils.image_dataset_from_directory",
    "keras.utils.split_dataset": _TF_DATA,
    "keras.utils.Sequence": "pass arrays, image_dataset_from_directory's result or a torch DataLoader to fit",
    "keras.utils.PyDataset": "pass arrays, image_dataset_from_directory's result or a torch DataLoader to fit",
    "keras.utils.plot_model": "model.summary() prints the layers; `cnnkit serve MODEL` draws them at /inside",
    "keras.utils.get_file": "cnnkit's standard data sets download themselves: keras.datasets.mnist.load_data()",
    "keras.utils.register_keras_serializable": "cnnkit.models.register_module (a torch module by name, never code)",
    "keras.callbacks.RemoteMonitor": "keras.callbacks.CSVLogger or TensorBoard, or `cnnkit train --mlflow`",
    "keras.callbacks.ProgbarLogger": "fit(verbose=1) shows cnnkit's progress bar",
    "keras.callbacks.SwapEMAWeights": "`cnnkit train --ema 0.999` validates and saves the averaged weights",
    "keras.layers.Lambda": "a Lambda layer would save code into the model file: write a torch module and "
    "wrap it with cnnkit.models.Model(module, input_shape=...)",  # fmt: skip
    "keras.layers.TFSMLayer": "cnnkit loads cnnkit model files, .keras and .h5 files, not TensorFlow SavedModels",
    "keras.layers.LSTM": "cnnkit is for images (CNNs); use torch.nn.LSTM inside cnnkit.models.Model(module, ...)",
    "keras.layers.GRU": "cnnkit is for images (CNNs); use torch.nn.GRU inside cnnkit.models.Model(module, ...)",
    "keras.layers.Embedding": "cnnkit is for images (CNNs); use torch.nn.Embedding inside cnnkit.models.Model",
    "keras.layers.MultiHeadAttention": "use torch.nn.MultiheadAttention inside cnnkit.models.Model(module, ...)",
    "keras.layers.TextVectorization": "cnnkit is for images; it has no text preprocessing",
    "keras.losses.MeanSquaredError": "cnnkit trains classifiers: sparse/categorical/binary cross-entropy",
    "keras.losses.MeanAbsoluteError": "cnnkit trains classifiers: sparse/categorical/binary cross-entropy",
    "keras.losses.Huber": "cnnkit trains classifiers: sparse/categorical/binary cross-entropy",
    "keras.losses.CategoricalFocalCrossentropy": "CategoricalCrossentropy(label_smoothing=...), or "
    "fit(class_weight=...) for imbalanced classes",  # fmt: skip
    "keras.metrics.MeanSquaredError": "cnnkit trains classifiers: accuracy, top-k accuracy, `cnnkit evaluate`",
    "keras.metrics.AUC": "`cnnkit evaluate MODEL` prints per-class precision, recall, F1 and calibration",
    "keras.metrics.Precision": "`cnnkit evaluate MODEL` prints per-class precision, recall and F1",
    "keras.metrics.Recall": "`cnnkit evaluate MODEL` prints per-class precision, recall and F1",
    "keras.metrics.F1Score": "`cnnkit evaluate MODEL` prints per-class precision, recall and F1",
    "keras.optimizers.Adagrad": "Adam, AdamW, SGD or RMSprop (or a torch.optim optimizer in your own loop)",
    "keras.optimizers.Adadelta": "Adam, AdamW, SGD or RMSprop (or a torch.optim optimizer in your own loop)",
    "keras.optimizers.Adamax": "Adam, AdamW, SGD or RMSprop (or a torch.optim optimizer in your own loop)",
    "keras.optimizers.Nadam": "Adam, AdamW, SGD or RMSprop (or a torch.optim optimizer in your own loop)",
    "keras.optimizers.Ftrl": "Adam, AdamW, SGD or RMSprop (or a torch.optim optimizer in your own loop)",
    "keras.optimizers.Lion": "Adam, AdamW, SGD or RMSprop (or a torch.optim optimizer in your own loop)",
    "keras.optimizers.schedules.InverseTimeDecay": "ExponentialDecay, CosineDecay or PiecewiseConstantDecay",
    "keras.optimizers.schedules.PolynomialDecay": "ExponentialDecay, CosineDecay or PiecewiseConstantDecay",
    "keras.optimizers.schedules.CosineDecayRestarts": "CosineDecay, or keras.callbacks.LearningRateScheduler",
}
# Whole namespaces: any name under them.
_PREFIXES = ("keras.ops", "keras.backend", "keras.random", "keras.applications", "keras.preprocessing",
             "keras.distribution", "keras.export", "keras.quantizers")  # fmt: skip
# Names people write for TensorFlow itself, through `import cnnkit as tf` or Keras code that mixes it in
# (`cnnkit.data` is cnnkit's own data module, so tf.data's datasets meet its names instead).
_TENSORFLOW = {"function": _TORCH, "GradientTape": "cnnkit's fit trains; for a loop of your own, "
               "use torch autograd (loss.backward()) on cnnkit.models.Model", "Tensor": _TORCH,
               "constant": _TORCH, "convert_to_tensor": _TORCH, "image": "keras.utils.load_img / img_to_array, "
               "or cnnkit's augmentation layers", "keras": "import cnnkit as keras"}  # fmt: skip


class KerasNameError(CnnkitError, AttributeError):
    """A Keras name cnnkit does not have; the message names the API and what to use instead."""


def keras_name(module: str, name: str) -> str:
    """``keras.callbacks.RemoteMonitor`` for ``("cnnkit.train.callbacks", "RemoteMonitor")``."""
    return f"{KERAS_MODULES.get(module, module)}.{name}"


def missing(module: str, name: str) -> AttributeError:
    """The error for ``module.name``, a name that module lacks (to ``raise`` from its ``__getattr__``).

    Private and dunder names get a plain AttributeError, so ``hasattr`` probes by Python's own
    machinery (pickle, inspect, pytest) behave as usual.
    """
    if name.startswith("_"):
        return AttributeError(f"module {module!r} has no attribute {name!r}")
    full = keras_name(module, name)
    instead = INSTEAD.get(full) or next((INSTEAD[p] for p in _PREFIXES if full.startswith(p + ".")), None)
    if instead is None and module == "cnnkit":
        instead = _TENSORFLOW.get(name)
    if instead is not None:
        return KerasNameError(f"{full} is not in cnnkit: {instead}")
    have = getattr(sys.modules.get(module), "__all__", [])
    listed = ", ".join(n for n in have if not n.isupper()) or "nothing under that name"
    return KerasNameError(f"{full} is not in cnnkit (yet); {KERAS_MODULES.get(module, module)} in cnnkit has: {listed}")
