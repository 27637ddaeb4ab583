"""The parity check: does the exported graph give the answers the PyTorch model gives?

Run at export time on real images. The commonest complaint about exported models is a
deployed model that disagrees with the trained one (most often because preprocessing
differs); checking probabilities, not just shapes, catches that before the file exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cnnkit.errors import ExportError

__all__ = ["FLOAT_TOLERANCE", "ParityError", "ParityReport", "check_parity", "compare_probabilities"]

FLOAT_TOLERANCE = 1e-4  # max |p_export - p_torch| for a float export

ProbabilityFn = Callable[[np.ndarray], np.ndarray]  # (B, C, H, W) float32 -> (B, classes) probabilities


class ParityError(ExportError):
    """The export computes something else than the model (beyond the tolerance)."""


@dataclass(frozen=True)
class ParityReport:
    """How closely an export's probabilities follow the PyTorch model's on ``n`` images."""

    n: int
    argmax_agreement: float  # fraction of images with the same top class
    max_abs_diff: float  # largest |p_export - p_torch| over all images and classes
    tolerance: float | None
    source: str

    @property
    def passed(self) -> bool:
        return self.tolerance is None or self.max_abs_diff <= self.tolerance

    def __str__(self) -> str:
        limit = f" (tolerance {self.tolerance:.0e})" if self.tolerance is not None else ""
        return (
            f"parity on {self.source}: argmax agreement {self.argmax_agreement:.2%}, "
            f"max |Δp| {self.max_abs_diff:.2e}{limit}"
        )


def compare_probabilities(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """``(argmax agreement, max abs difference)`` of two ``(N, classes)`` probability arrays."""
    if reference.shape != candidate.shape:
        raise ParityError(f"the export returns shape {candidate.shape}, the model {reference.shape}")
    if len(reference) == 0:
        return 1.0, 0.0
    agreement = float((reference.argmax(1) == candidate.argmax(1)).mean())
    return agreement, float(np.abs(reference.astype(np.float64) - candidate).max())


def batched(fn: ProbabilityFn, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """``fn`` over ``images`` in batches (so a large check never needs one huge batch)."""
    return np.concatenate([fn(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def check_parity(
    reference: ProbabilityFn,
    candidate: ProbabilityFn,
    images: torch.Tensor,
    *,
    source: str,
    tolerance: float | None = FLOAT_TOLERANCE,
    what: str = "the export",
) -> ParityReport:
    """Compare ``candidate`` with ``reference`` on ``images`` ``(N, C, H, W)``; raise :class:`ParityError`
    when the largest probability difference exceeds ``tolerance`` (``None``: report only)."""
    x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
    expected, got = batched(reference, x), batched(candidate, x)
    if not np.isfinite(got).all():
        raise ParityError(f"{what} returns NaN or infinite probabilities on {source}")
    agreement, diff = compare_probabilities(expected, got)
    report = ParityReport(len(x), agreement, diff, tolerance, source)
    if not report.passed:
        raise ParityError(
            f"{what} disagrees with the PyTorch model: {report}; nothing was written. "
            f"An op exports with different numerics; please report it with the model's architecture"
        )
    return report
