"""Stratified, seeded splits, recorded so a run can be reproduced."""

from __future__ import annotations

import numpy as np

from cnnkit.errors import DataError

__all__ = ["stratified_split"]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..N-1`` into (kept, held-out) with ``fraction`` held out in every class.

    Classes too small to stratify (fewer than two images) fall back to a plain seeded split.
    """
    from sklearn.model_selection import train_test_split  # imported here: it costs 1.5 s at start-up

    labels = np.asarray(labels)
    indices = np.arange(len(labels))
    if not 0 < fraction < 1:
        raise DataError(f"a split fraction must be between 0 and 1, got {fraction}")
    held = max(1, round(fraction * len(labels)))
    if held >= len(labels):
        raise DataError(f"cannot hold out {fraction:.0%} of only {len(labels)} images")
    counts = np.bincount(labels)
    can_stratify = counts[counts > 0].min() >= 2 and held >= np.count_nonzero(counts)
    kept, held_out = train_test_split(
        indices, test_size=held, random_state=seed, stratify=labels if can_stratify else None
    )
    return np.sort(kept), np.sort(held_out)
