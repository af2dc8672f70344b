"""Classification metrics with intervals, in NumPy, for readouts and interventions.

Kept dependency-light so every stage reports the same numbers the same way: accuracy with a
Wilson interval, balanced accuracy, macro-F1 and the chance levels to read them against.
"""

from __future__ import annotations

import numpy as np


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (well-behaved near 0 and 1, unlike Wald)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def confusion(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[gold, pred]``."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(gold), np.asarray(pred)), 1)
    return matrix


def balanced_accuracy(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Mean per-class recall over the classes present in ``gold``."""
    m = confusion(gold, pred, n_classes)
    support = m.sum(1)
    present = support > 0
    return float(np.mean(np.diag(m)[present] / support[present])) if present.any() else float("nan")


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean F1 over classes present in gold or predictions (sklearn's convention)."""
    m = confusion(gold, pred, n_classes)
    tp = np.diag(m).astype(float)
    fp = m.sum(0) - tp
    fn = m.sum(1) - tp
    present = (m.sum(0) + m.sum(1)) > 0
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean()) if present.any() else float("nan")


def classification_summary(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy (with Wilson CI), balanced accuracy, macro-F1 and chance levels."""
    gold = np.asarray(gold)
    pred = np.asarray(pred)
    n = len(gold)
    correct = int((gold == pred).sum())
    low, high = wilson_interval(correct, n)
    counts = np.bincount(gold, minlength=n_classes)
    return {
        "n": n,
        "accuracy": correct / n if n else float("nan"),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "balanced_accuracy": balanced_accuracy(gold, pred, n_classes),
        "macro_f1": macro_f1(gold, pred, n_classes),
        "chance": 1.0 / n_classes,
        "majority_baseline": float(counts.max() / n) if n else float("nan"),
    }
