"""Is model A really better than model B? Two tests on the same images.

- The accuracy difference with a paired bootstrap confidence interval: resampling images
  (with replacement) resamples each image's pair of outcomes, so the interval accounts for
  the two models being tested on the same images.
- McNemar's exact test: under "equally accurate", the images exactly one model gets right
  are equally likely to favour either, so ``only_a ~ Binomial(only_a + only_b, 1/2)``.

Both look at the same paired outcomes at the same level (a 95% interval, a 5% test), and
they nearly always agree. When they do not, the verdict is the exact test's: the percentile
bootstrap is approximate, and too narrow when few images separate the models (with 5
images only A gets right and none only B, no resample can ever favour B, so the interval
excludes 0 while the exact p is 0.0625). :meth:`Comparison.verdict` says which, and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cnnkit.errors import DataError

__all__ = ["Comparison", "compare_predictions"]


@dataclass(frozen=True)
class Comparison:
    """Accuracy of A and B on the same ``n`` images, their difference, and how sure it is."""

    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float  # accuracy_a - accuracy_b
    ci_low: float
    ci_high: float
    confidence: float
    both_right: int
    only_a: int  # right by A, wrong by B
    only_b: int
    both_wrong: int
    mcnemar_p: float

    @property
    def significant(self) -> bool:
        """Whether McNemar's test rejects "equally accurate" at ``1 - confidence``."""
        return self.mcnemar_p < 1.0 - self.confidence

    @property
    def interval_excludes_zero(self) -> bool:
        """Whether the bootstrap interval says the accuracies differ."""
        return self.ci_low > 0 or self.ci_high < 0

    @property
    def tests_agree(self) -> bool:
        """Whether the bootstrap interval and McNemar's test reach the same verdict."""
        return self.interval_excludes_zero == self.significant

    def verdict(self) -> str:
        """The one verdict (McNemar's exact test), with why the bootstrap differs when it does."""
        alpha = f"{1 - self.confidence:.0%}"
        if self.significant:
            better = "A" if self.difference > 0 else "B"
            text = f"model {better} is more accurate: the difference is significant at {alpha}"
        else:
            text = f"no significant difference at {alpha}: these images cannot tell the models apart"
        if self.tests_agree:
            return text + " (the bootstrap interval and McNemar's exact test agree)"
        discordant = self.only_a + self.only_b
        if self.interval_excludes_zero:
            why = (f"the bootstrap interval excludes 0 but McNemar's exact test (p = {self.mcnemar_p:.4g}) does not "
                   f"reject: only {discordant} images separate the models, too few for the bootstrap, which "
                   f"resamples them and is then too narrow")  # fmt: skip
        else:
            why = (f"McNemar's exact test rejects (p = {self.mcnemar_p:.4g}) but the bootstrap interval includes 0, "
                   f"an approximation at its edge")  # fmt: skip
        return f"{text}; the verdict follows the exact test: {why}"

    def to_dict(self) -> dict[str, float | int | bool | str]:
        return {**asdict(self), "significant": self.significant, "tests_agree": self.tests_agree,
                "verdict": self.verdict()}  # fmt: skip


def compare_predictions(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> Comparison:
    """Compare two models from which images each got right (``(N,)`` bools, same images, same order)."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise DataError(f"compare needs both models' results on the same images, got {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise DataError(f"confidence must be between 0 and 1, got {confidence}")
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    # Each image contributes +1, -1 or 0 to n * difference, so a bootstrap resample is fully
    # described by how many of each it draws: a multinomial draw replaces n random indices.
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, [only_a / n, only_b / n, 1 - (only_a + only_b) / n], size=resamples)  # (R, 3)
    differences = (draws[:, 0] - draws[:, 1]) / n  # (R,)
    tail = (1 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return Comparison(
        n=n,
        accuracy_a=float(a.mean()),
        accuracy_b=float(b.mean()),
        difference=float(a.mean() - b.mean()),
        ci_low=float(low),
        ci_high=float(high),
        confidence=confidence,
        both_right=int((a & b).sum()),
        only_a=only_a,
        only_b=only_b,
        both_wrong=int((~a & ~b).sum()),
        mcnemar_p=min(1.0, p),
    )
