"""Scores read against chance, so tasks with different label sets can be compared.

Why: raw accuracies of tasks with different chance levels (a first-word task whose majority
class covers 61% of items, an emotion task at about 8%) cannot be subtracted. A chance-normalised
score ``(score - chance) / (1 - chance)`` is 0 for an uninformed predictor and 1 for a perfect
one on either task; balanced accuracy (chance ``1/K``) is the other common fix.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score

__all__ = ["balanced_accuracy", "chance_normalised", "majority_share"]


def majority_share(labels) -> float:
    """Share of the most frequent label: the accuracy of always guessing it."""
    y = np.asarray(labels).ravel()
    if not y.size:
        return float("nan")
    _, counts = np.unique(y, return_counts=True)
    return float(counts.max() / y.size)


def chance_normalised(score, chance):
    """``(score - chance) / (1 - chance)``: 0 at chance, 1 at perfect; NaN where chance is 1
    (a single-class test set, on which no score says anything)."""
    s, c = np.asarray(score, dtype=float), np.asarray(chance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(c < 1, (s - c) / (1 - c), np.nan)
    return float(out) if out.ndim == 0 else out


def balanced_accuracy(gold, pred) -> float:
    """Mean per-class recall over the classes present in ``gold`` (scikit-learn's definition)."""
    gold, pred = np.asarray(gold).ravel(), np.asarray(pred).ravel()
    if not gold.size:
        return float("nan")
    return float(balanced_accuracy_score(gold, pred))
