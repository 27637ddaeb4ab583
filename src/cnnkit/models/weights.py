"""Start a model from pretrained weights: ImageNet, a torchvision state dict, or a cnnkit model file.

``load_pretrained(model, "imagenet")`` loads torchvision's published ImageNet weights;
``load_pretrained(model, "weights.safetensors" | "weights.pth" | "runs/x/model.safetensors")``
loads a file. Every tensor must fit the model, with two deliberate exceptions:

- the head (the last Linear layer) is replaced by the model's freshly initialized one,
  unless the file is a cnnkit model with the very same class names (then training goes on);
- the first convolution adapts to the model's input channels: RGB filters are summed for a
  grey model (a grey image then gets the response its RGB copy got), grey filters are spread
  over RGB for a color one.

The preprocessing the weights expect (mean/std) is set on the model, so it travels into the
model file; weights trained on 0..255 pixels (a Keras-trained file's ``pixel_max`` 255) get it
divided by 255, so the model takes cnnkit's [0, 1] pixels and its body still sees what it did.
``.pth`` files are read with ``torch.load(weights_only=True)``: a pickle that would run code is
refused.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from cnnkit import modelfile
from cnnkit.classifier import pixel_max
from cnnkit.errors import CnnkitError, ConfigError, ModelFileError
from cnnkit.models._registry import get_model_entry
from cnnkit.models.loading import load_model
from cnnkit.models.model import Model
from cnnkit.models.pretrained import fetch_imagenet_weights, imagenet_weights
from cnnkit.runs import resolve_model

__all__ = ["PretrainedWeights", "WeightsReport", "first_conv_name", "head_name", "load_pretrained", "read_weights_file"]

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's, for all its weights


@dataclass
class PretrainedWeights:
    """Tensors from somewhere, and what is known about them."""

    tensors: dict[str, torch.Tensor]
    origin: str  # for messages: the file, or which ImageNet weights
    normalization: dict[str, list[float]] | None = None
    class_names: list[str] | None = None
    model_name: str | None = None  # the architecture a cnnkit model file holds
    input_shape: tuple[int, ...] | None = None  # (H, W, C) a cnnkit model file was trained at
    pixel_max: float = 1.0  # a white pixel in what they were trained on (cnnkit.classifier): 255 for Keras' 0..255


@dataclass
class WeightsReport:
    """What ``load_pretrained`` did."""

    origin: str
    loaded: int
    head_replaced: bool
    first_conv: str | None = None
    normalization: dict[str, list[float]] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"loaded {self.loaded} tensors from {self.origin}"]
        parts.append("new head for this data's classes" if self.head_replaced else "head kept (same classes)")
        if self.first_conv:
            parts.append(self.first_conv)
        return "; ".join(parts)


def head_name(model: nn.Module) -> str:
    """The classifier: the last ``nn.Linear`` in the model (what a new class count replaces)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError(f"{type(model).__name__} has no Linear classifier layer to replace")
    return names[-1]


def first_conv_name(model: nn.Module) -> str | None:
    """The first ``nn.Conv2d``: the one that sees the image's channels."""
    return next((name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


# -- reading -----------------------------------------------------------------------------
def read_weights_file(path: str | os.PathLike) -> PretrainedWeights:
    """Tensors from a cnnkit model file (or a run, named as ``cnnkit predict`` takes it), a safetensors
    state dict, or a ``.pth`` state dict."""
    path = Path(path)
    if not path.is_file():
        path = _run_model_file(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: an 8-byte length, then a JSON header
        return _read_safetensors(path)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip, or a bare pickle
        return PretrainedWeights(_read_pth(path), str(path))
    raise ModelFileError(f"{path} is neither a safetensors file nor a PyTorch (.pth) state dict")


def _run_model_file(path: Path) -> Path:
    """The model file of the run ``path`` names (its folder, ``latest`` or a prefix of its name)."""
    missing = f"{path}: no such weights file (give a .safetensors or .pth file, a run, or 'imagenet')"
    try:
        source = resolve_model(path)
    except CnnkitError:
        raise ModelFileError(missing) from None
    if source.kind != "model" or not source.path.is_file():
        raise ModelFileError(missing)
    return source.path


def _read_safetensors(path: Path) -> PretrainedWeights:
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path} is damaged (truncated or modified): {e}") from None
    if header.get("format") != "cnnkit":
        return PretrainedWeights(_strip_module_prefix(modelfile.read_weights(path)), str(path))
    source = load_model(path)  # checks the checksum and rebuilds the architecture
    name = source.training_summary.get("model") or source.name
    return PretrainedWeights(
        tensors=dict(source.state_dict()), origin=str(path), normalization=source.normalization,
        class_names=source.class_names, model_name=str(name),
        input_shape=tuple(source.image_shape) if source.image_shape else None, pixel_max=pixel_max(source),
    )  # fmt: skip


def _read_pth(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only: only tensors and plain containers are rebuilt; anything else is refused.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(
            f"{path} was refused: it holds Python objects other than tensors, and loading them could run code "
            f"({first}). Save a plain state dict instead: torch.save(model.state_dict(), path) or, better, "
            f"safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise ModelFileError(f"{path} is damaged or not a PyTorch state dict: {e}") from None
    return _strip_module_prefix(_state_dict_in(obj, path))


def _state_dict_in(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A state dict, or one nested in a training checkpoint under a usual key."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model_state_dict", "model", "weights"):
            if isinstance(obj.get(key), Mapping):
                return _state_dict_in(obj[key], path)
    raise ModelFileError(f"{path} holds no state dict (a mapping of parameter names to tensors)")


def _strip_module_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DataParallel/DDP checkpoints prefix every name with ``module.``."""
    if tensors and all(k.startswith("module.") for k in tensors):
        return {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors


def _read_imagenet(model_name: str | None, verbose: bool) -> PretrainedWeights:
    if model_name is None:
        raise ConfigError("--weights imagenet needs a registered model (e.g. --model resnet18), not a custom one")
    spec = imagenet_weights(model_name)
    path = fetch_imagenet_weights(spec, verbose=verbose)
    weights = PretrainedWeights(_read_pth(path), f"ImageNet weights {spec.enum}")
    weights.normalization = {"mean": list(spec.mean), "std": list(spec.std)}
    return weights


# -- fitting -----------------------------------------------------------------------------
def registry_name(model: Model) -> str | None:
    """The registered architecture a model was built as, if any."""
    architecture = model.architecture or {}
    if architecture.get("class_name") == "registry":
        return architecture.get("config", {}).get("name")
    return model.training_summary.get("model")


def _align_names(tensors: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision state dict names ``conv1.weight`` what a cnnkit Model names ``net.conv1.weight``."""
    prefixed = {f"net.{k}": v for k, v in tensors.items()}
    return prefixed if len(prefixed.keys() & target.keys()) > len(tensors.keys() & target.keys()) else tensors


def _adapt_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """First-conv filters ``(out, c, kh, kw)`` for ``channels`` inputs, same response to grey images."""
    if weight.shape[1] == 3 and channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if weight.shape[1] == 1 and channels == 3:
        return weight.repeat(1, 3, 1, 1) / 3
    raise ConfigError(f"cannot adapt a first convolution from {weight.shape[1]} to {channels} input channels")


def _adapt_normalization(norm: dict[str, Sequence[float]] | None, channels: int) -> dict[str, list[float]] | None:
    if norm is None or len(norm["mean"]) == channels:
        return None if norm is None else {k: list(v) for k, v in norm.items()}
    if channels == 1:  # grey: the channel average, matching the summed filters
        return {k: [sum(v) / len(v)] for k, v in norm.items()}
    return {k: list(v) * channels for k, v in norm.items()}


def _rescale_normalization(norm: dict[str, list[float]] | None, scale: float, channels: int) -> dict[str, list[float]]:
    """The normalization that gives the body, from pixels ``scale`` times smaller, what ``norm`` gave it.

    ``(scale * x - mean) / std == (x - mean / scale) / (std / scale)``: the weights see the inputs
    they were trained on, and the model keeps the pipeline's pixel range.
    """
    norm = norm or {"mean": [0.0] * channels, "std": [1.0] * channels}
    return {"mean": [m / scale for m in norm["mean"]], "std": [s / scale for s in norm["std"]]}


def _fit_tensors(model: Model, weights: PretrainedWeights, keep_head: bool) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict to load (head left out when replaced) and a note on the first convolution."""
    target = model.state_dict()
    tensors = _align_names(weights.tensors, target)
    head = head_name(model) + "."
    conv = f"{first_conv_name(model)}.weight"
    state: dict[str, torch.Tensor] = {}
    missing, mismatched, note = [], [], ""
    for key, wanted in target.items():
        got = tensors.get(key)
        if key.startswith(head) and not keep_head:
            continue  # the new head keeps its fresh initialization
        if got is None:
            if not key.endswith("num_batches_tracked"):  # older files lack BatchNorm's step counter
                missing.append(key)
        elif got.shape == wanted.shape:
            state[key] = got.to(wanted.dtype)
        elif key == conv and got.ndim == 4 and got.shape[0] == wanted.shape[0] and got.shape[2:] == wanted.shape[2:]:
            state[key] = _adapt_channels(got, wanted.shape[1]).to(wanted.dtype)
            grey = wanted.shape[1] == 1
            note = f"first convolution's {'RGB filters summed for grey' if grey else 'grey filters spread over RGB'}"
        else:
            mismatched.append(f"{key} {tuple(got.shape)} in the file, {tuple(wanted.shape)} in the model")
    unexpected = sorted(set(tensors) - set(target))
    if missing or mismatched or unexpected:
        raise ConfigError(_misfit_message(model, weights, missing, unexpected, mismatched))
    return state, note


def _misfit_message(model: Model, weights: PretrainedWeights, missing: list[str], unexpected: list[str],
                    mismatched: list[str]) -> str:  # fmt: skip
    def some(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f", ... ({len(items)} in all)" if len(items) > 3 else "")

    wanted = registry_name(model) or model.name
    problems = [f"missing from the file: {some(missing)}" if missing else "",
                f"not in the model: {some(unexpected)}" if unexpected else "",
                f"other shapes: {some(mismatched)}" if mismatched else ""]  # fmt: skip
    hint = ""
    if weights.model_name and weights.model_name != wanted:
        hint = f" The file holds a {weights.model_name!r} model: train with --model {weights.model_name}."
    elif weights.input_shape and model.image_shape and weights.input_shape[:2] != tuple(model.image_shape[:2]):
        # Flatten + Dense models fix their input size: the file's must be used again.
        size = weights.input_shape[0]
        hint = f" The file was trained on {size}x{weights.input_shape[1]} images: use --image-size {size}."
    return f"{weights.origin} does not fit {wanted}: {'; '.join(p for p in problems if p)}.{hint}"


def load_pretrained(
    model: Model,
    weights: str | os.PathLike | PretrainedWeights,
    *,
    class_names: Sequence[str] | None = None,
    keep_head: bool | None = None,
    verbose: bool = True,
) -> WeightsReport:
    """Load pretrained ``weights`` ("imagenet", a file, or tensors) into ``model`` in place.

    ``keep_head`` None keeps the file's head only when it is a cnnkit model with the same
    ``class_names`` (default: the model's); otherwise the head stays freshly initialized.
    """
    name = registry_name(model)
    if isinstance(weights, PretrainedWeights):
        source = weights
    elif str(weights) == "imagenet":
        source = _read_imagenet(name, verbose)
    else:
        source = read_weights_file(weights)
        if source.normalization is None and name is not None and get_model_entry(name).imagenet:
            # torchvision's families are published with ImageNet weights and their preprocessing.
            source.normalization = {"mean": list(_IMAGENET_MEAN), "std": list(_IMAGENET_STD)}
    class_names = list(class_names) if class_names is not None else model.class_names
    if keep_head is None:
        keep_head = source.class_names is not None and class_names is not None and source.class_names == class_names
    state, note = _fit_tensors(model, source, keep_head)
    with torch.no_grad():
        model.load_state_dict(state, strict=False)  # only the head (and BatchNorm counters) may be left out
    channels = model.image_shape[2] if model.image_shape else 3
    normalization = _adapt_normalization(source.normalization, channels)
    scale = source.pixel_max / pixel_max(model)
    if scale != 1.0:  # weights trained on 0..255 into a model fed [0, 1]: the first arithmetic scales up
        normalization = _rescale_normalization(normalization, scale, channels)
    if normalization is not None:
        device = next(model.parameters()).device
        model.set_normalization(normalization)
        model.to(device)  # the new mean/std buffers follow the weights
    model.training_summary["pretrained"] = source.origin
    return WeightsReport(source.origin, len(state), not keep_head, note or None, normalization)
