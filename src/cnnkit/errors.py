"""The errors cnnkit raises for user mistakes.

Everything derived from :class:`CnnkitError` is a problem the user can fix (a wrong
shape, a bad file, a missing data set). The CLI prints these as one line and exits
non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "CnnkitError",
    "ConfigError",
    "DataError",
    "ExportError",
    "ImageError",
    "ImageTooLargeError",
    "ModelFileError",
    "ShapeError",
    "TrainingError",
    "UnsupportedImageError",
]


class CnnkitError(Exception):
    """Base class of all user-facing cnnkit errors."""


class ShapeError(CnnkitError, ValueError):
    """A layer got an input of the wrong rank or size."""


class ConfigError(CnnkitError, ValueError):
    """An unknown name, a bad argument or an inconsistent configuration."""


class DataError(CnnkitError):
    """A data set, image or array that cannot be used as given."""


class ImageError(DataError):
    """An image file cnnkit cannot use; ``kind`` says why in a word or two (for reports).

    Kinds: ``missing``, ``unreadable``, ``empty``, ``not an image``, ``too large``, ``truncated``.
    """

    kind = "unreadable"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class ImageTooLargeError(ImageError):
    """An image with more pixels than the decoder's limit (refused before any pixel is decoded)."""

    kind = "too large"


class UnsupportedImageError(ImageError):
    """Bytes that are not an image in a format cnnkit reads (as opposed to a truncated or corrupt one)."""

    kind = "not an image"


class ModelFileError(CnnkitError):
    """A model file that is missing, unsafe, damaged or from a newer cnnkit."""


class TrainingError(CnnkitError):
    """Training cannot go on (the loss became NaN, ...); saved checkpoints are kept."""


class ExportError(CnnkitError):
    """A model that cannot be exported, or whose export disagrees with it (nothing is written)."""
