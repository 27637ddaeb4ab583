"""What a training run warns about: set-ups whose numbers would mislead, and a model that learnt one class.

Each check returns one line of text (or nothing); :mod:`cnnkit.recipe.run` prints it as
``warning: ...``, records it in the model file's training summary (``warnings``) and the
report shows it. None of them stops a run: each is legal, and sometimes meant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["one_class_warning", "setup_warnings"]

MIN_VAL_PER_CLASS = 2  # below this, val_loss (which picks the best epoch) hangs on single images


def setup_warnings(*, tta: bool, augment: str, val_labels: np.ndarray | None, class_names: Sequence[str]
                   ) -> list[str]:  # fmt: skip
    """Warnings known before training: ``--tta`` without flips, too few validation images per class.

    ``augment`` is the resolved augmentation policy (e.g. ``"crop+affine"``); ``val_labels``
    the validation split's labels (None: the run has no validation split, which is a choice).
    """
    found = []
    if tta and "flip" not in augment.replace("-", "+").split("+"):
        found.append(f"--tta averages each test image with its mirror, but this run's augmentation "
                     f"({augment}) never flips: the model never saw mirrored images (e.g. a mirrored digit "
                     f"is another shape); drop --tta, or add flips with --augment flip+...")  # fmt: skip
    if val_labels is not None and len(val_labels):
        counts = np.bincount(np.asarray(val_labels), minlength=len(class_names))
        few = [f"{name} ({int(c)})" for name, c in zip(class_names, counts) if c < MIN_VAL_PER_CLASS]
        if few:
            shown = ", ".join(few[:5]) + (f" and {len(few) - 5} more" if len(few) > 5 else "")
            found.append(f"the validation split has fewer than {MIN_VAL_PER_CLASS} images of {len(few)} of "
                         f"{len(class_names)} classes: {shown}; val_loss and val_accuracy (which pick the best "
                         f"epoch) rest on too few images: add images or raise --val-split")  # fmt: skip
    return found


def one_class_warning(predictions: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> str | None:
    """A warning when the model predicts one class for most test images, far more often than that class occurs.

    "Most" means over half of the images and at least halfway from the class's true share to all
    of them: with 5 balanced classes, 60%; with 2, 75%; for a class that is 90% of the labels, 95%.
    """
    n = len(predictions)
    if n == 0 or len(class_names) < 2:
        return None
    counts = np.bincount(np.asarray(predictions), minlength=len(class_names))
    top = int(counts.argmax())
    share = counts[top] / n
    true_share = float(np.mean(np.asarray(labels) == top))
    if share <= 0.5 or share < true_share + (1 - true_share) / 2:
        return None
    return (f"the model predicts {class_names[top]!r} for {share:.0%} of the {n} test images ({true_share:.0%} "
            f"of them are {class_names[top]!r}): it has learnt little beyond that class; train longer, try a "
            f"smaller --lr, --class-weights auto, or more images per class")  # fmt: skip
