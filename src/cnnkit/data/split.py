"""Stratified, seeded splits, recorded so a run can be reproduced.

The split is scikit-learn's ``train_test_split(..., stratify=labels, random_state=seed)``,
index for index (``tests/test_data.py`` checks it against scikit-learn), computed here in numpy:
importing scikit-learn costs 1.5 s, which every training run would pay for one split.
"""

from __future__ import annotations

import numpy as np

from cnnkit.errors import DataError

__all__ = ["stratified_split"]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..N-1`` into (kept, held-out) with ``fraction`` held out in every class.

    Classes too small to stratify (fewer than two images) fall back to a plain seeded split.
    """
    labels = np.asarray(labels)
    if not 0 < fraction < 1:
        raise DataError(f"a split fraction must be between 0 and 1, got {fraction}")
    n = len(labels)
    held = max(1, round(fraction * n))
    if held >= n:
        raise DataError(f"cannot hold out {fraction:.0%} of only {n} images")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rng = np.random.RandomState(seed)  # scikit-learn's generator, drawn from in its order
    if counts.min() >= 2 and min(held, n - held) >= len(classes):  # StratifiedShuffleSplit
        kept_per_class = _approximate_mode(counts, n - held, rng)
        held_per_class = _approximate_mode(counts - kept_per_class, held, rng)
        by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
        kept, held_out = [], []
        for members, k, h in zip(by_class, kept_per_class, held_per_class):
            shuffled = members[rng.permutation(len(members))]
            kept.append(shuffled[:k])
            held_out.append(shuffled[k : k + h])
        return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held_out))
    order = rng.permutation(n)  # ShuffleSplit: the first `held` of one permutation are held out
    return np.sort(order[held:]), np.sort(order[:held])


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``draws`` each class gets: its floored share, then one more for the largest
    remainders, ties broken by ``rng`` (scikit-learn's ``_approximate_mode``)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    remainder = continuous - floored
    for value in np.sort(np.unique(remainder))[::-1]:
        if need <= 0:
            break
        (tied,) = np.where(remainder == value)
        chosen = rng.choice(tied, size=min(len(tied), need), replace=False)
        floored[chosen] += 1
        need -= len(chosen)
    return floored.astype(int)
