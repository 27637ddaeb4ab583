"""torchvision's published ImageNet weights: which file, where it is cached, and downloading it once.

``--weights imagenet`` uses the weights torchvision publishes for a model (its ``DEFAULT``
weights enum: the URL, and the SHA-256 prefix torchvision puts in the file name). The file
is downloaded once into ``$CNNKIT_DATA/weights/`` (default ``~/.cache/cnnkit/weights/``)
with a progress bar, checked against that hash, and written atomically. A file already in
torch's own hub cache is used as it is. Offline (or with ``CNNKIT_OFFLINE=1``), a missing
file is a one-line error naming the file, its URL and the folder to put it in; the
connection attempt gives up after a few seconds instead of hanging.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnkit._io import atomic_write, data_root, file_sha256
from cnnkit.errors import ConfigError, ModelFileError
from cnnkit.models._registry import get_model_entry, list_models

__all__ = ["ImagenetWeights", "cache_dir", "fetch_imagenet_weights", "imagenet_weights"]

TIMEOUT_S = 10.0  # per connection attempt and per read: offline fails fast, a stalled download too
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")  # torchvision's "<name>-<sha256 prefix>.pth"


def cache_dir() -> Path:
    """cnnkit's download cache: ``$CNNKIT_DATA``, default ``~/.cache/cnnkit``."""
    return data_root()


@dataclass(frozen=True)
class ImagenetWeights:
    """One torchvision weights enum entry, as cnnkit needs it."""

    model: str  # torchvision's model name
    enum: str  # e.g. "ResNet18_Weights.IMAGENET1K_V1"
    url: str
    sha256_prefix: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_size: int  # the image size the weights were evaluated at
    top1: float | None  # ImageNet-1K accuracy torchvision reports, in percent

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def imagenet_weights(model_name: str) -> ImagenetWeights:
    """The ImageNet weights torchvision publishes for the registered model ``model_name``."""
    entry = get_model_entry(model_name)
    if entry.imagenet is None:
        with_weights = [n for n in list_models() if get_model_entry(n).imagenet]
        raise ConfigError(
            f"{model_name} has no published ImageNet weights; models that have them: {', '.join(with_weights)}"
        )
    import torchvision

    weights = torchvision.models.get_model_weights(entry.imagenet).DEFAULT
    match = _HASH_IN_NAME.search(weights.url.rsplit("/", 1)[-1])
    if match is None:  # every torchvision weights file carries it; refuse to download unchecked
        raise ModelFileError(f"{weights.url}: no SHA-256 prefix in the file name to check the download against")
    preprocess = weights.transforms()
    return ImagenetWeights(
        model=entry.imagenet,
        enum=f"{type(weights).__name__}.{weights.name}",
        url=weights.url,
        sha256_prefix=match.group(1),
        mean=tuple(preprocess.mean),
        std=tuple(preprocess.std),
        crop_size=int(preprocess.crop_size[0]),
        top1=weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1"),
    )


def _torch_hub_copy(filename: str) -> Path:
    """Where torchvision itself would have cached the file (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def fetch_imagenet_weights(weights: ImagenetWeights, *, verbose: bool = True) -> Path:
    """The local path of ``weights``' file, downloading it into the cache first if needed."""
    target = cache_dir() / "weights" / weights.filename
    for candidate in (target, _torch_hub_copy(weights.filename)):
        if candidate.is_file() and file_sha256(candidate).startswith(weights.sha256_prefix):
            return candidate
    # A damaged or tampered-with cached file fails its checksum: a good download replaces it atomically.
    reason = f"the cached {target} fails its checksum" if target.exists() else "not downloaded yet"
    if os.environ.get("CNNKIT_OFFLINE", "") not in ("", "0"):
        raise _missing(weights, target, f"{reason}, and CNNKIT_OFFLINE is set")
    _download(weights, target, verbose=verbose)
    return target


def _missing(weights: ImagenetWeights, target: Path, reason: str) -> ModelFileError:
    return ModelFileError(
        f"ImageNet weights for {weights.model} ({weights.enum}) are not available: {reason}. "
        f"Download {weights.url} and put it in {target.parent}/ as {weights.filename} "
        f"(SHA-256 starting {weights.sha256_prefix}), then run again"
    )


def _download(weights: ImagenetWeights, target: Path, *, verbose: bool) -> None:
    """Stream the URL to ``target`` atomically, hashing as it goes; a wrong hash keeps nothing."""
    try:
        response = urllib.request.urlopen(weights.url, timeout=TIMEOUT_S)  # noqa: S310 - torchvision's https URL
    except (urllib.error.URLError, OSError) as e:
        raise _missing(weights, target, f"cannot reach {weights.url} ({getattr(e, 'reason', e)})") from None

    def write(tmp: str) -> None:
        digest = hashlib.sha256()
        total = int(response.headers.get("Content-Length") or 0) or None
        with response, open(tmp, "wb") as f, _DownloadProgress(verbose, weights.filename, total) as advance:
            try:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    advance(len(chunk))
            except OSError as e:  # a timeout or a reset in the middle of the download
                raise _missing(weights, target, f"the download from {weights.url} broke off ({e})") from None
        if not digest.hexdigest().startswith(weights.sha256_prefix):
            raise ModelFileError(
                f"the file downloaded from {weights.url} does not match its SHA-256 prefix {weights.sha256_prefix} "
                f"(got {digest.hexdigest()[:12]}...): nothing was kept; try again"
            )

    atomic_write(target, write)


class _DownloadProgress:
    """A rich download bar on stderr (bytes, speed, time left), or nothing when ``verbose`` is off."""

    def __init__(self, verbose: bool, name: str, total: int | None) -> None:
        self.bar = None
        if verbose:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

            self.bar = Progress(f"downloading {name}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True), transient=True)  # fmt: skip
            self.task = self.bar.add_task(name, total=total)

    def __enter__(self):
        if self.bar is None:
            return lambda n: None
        self.bar.start()
        return lambda n: self.bar.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
