"""Flags for probe results whose test set or class count makes them meaningless.

A small model may read 18 items correctly, 13 of one label; probing those with an 80/20 split
leaves 4 test items and prints "best emotion: 1.000 [1.000, 1.000]". Such a number is not a
finding. :func:`probe_warnings` says so in words (with what to do), and the CLI line, the probe
``summary.json`` and the report print those words next to the number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from emolens.errors import arg

__all__ = ["MIN_CLASSES", "MIN_TEST_ITEMS", "MAX_MAJORITY", "probe_warnings"]

#: Fewer held-out items than this and a layer ranking is noise (a 95% interval of ±0.2 or more).
MIN_TEST_ITEMS = 20
#: A classifier needs at least two classes to be meaningful.
MIN_CLASSES = 2
#: Above this share of one class, raw accuracy mostly measures the majority class.
MAX_MAJORITY = 0.6


def probe_warnings(table: pd.DataFrame, labels: np.ndarray, label_names: Sequence[str],
                   first_words: np.ndarray | None = None) -> list[str]:
    """One sentence per problem of the emotion and first-word probes (empty when none)."""
    out: list[str] = []
    fix = f"use {arg('items', 'all')}, more items, or {arg('protocol', 'cv')}"
    present = labels[labels >= 0]
    if len(present):
        counts = np.bincount(present, minlength=len(label_names))
        n_classes = int((counts > 0).sum())
        if n_classes < MIN_CLASSES:
            out.append(f"emotion probe: the selected items hold {n_classes} label(s), so accuracy is meaningless; "
                       f"{fix}")
        top = int(counts.argmax())
        share = counts[top] / counts.sum()
        if n_classes >= MIN_CLASSES and share > MAX_MAJORITY:
            out.append(f"emotion probe: {share:.0%} of the items are {label_names[top]!r}; read balanced accuracy, "
                       f"not accuracy; {fix}")
    emo = table[(table.task == "emotion") & (table.metric == "accuracy")] if len(table) else table
    if len(emo) and "n" in emo and emo["n"].min() < MIN_TEST_ITEMS:
        out.append(f"emotion probe: only {int(emo['n'].min())} test items (fewer than {MIN_TEST_ITEMS}), so the "
                   f"best layer and its interval are not findings; {fix}")
    if first_words is not None and len(first_words):
        fw = first_words[first_words >= 0]
        if len(np.unique(fw)) < MIN_CLASSES:
            out.append("first-word control: the items start with fewer than two listed first words, so the "
                       "control and the selectivity are meaningless; use more, or more varied, items")
    return out
