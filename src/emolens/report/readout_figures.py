"""The readout's confusion matrix: one drawing for ``emolens readout``, the readout stage and the report.

Rows are gold labels, columns predictions; cells are coloured by the fraction of the gold row and
show the counts, so a rare class's errors are as visible as a frequent one's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from emolens.labels import EMOTIONS
from emolens.metrics import confusion
from emolens.report.plotting import save_figure, subplots

#: File the readout's figure is written to, next to ``readout.parquet``.
CONFUSION_PNG = "confusion.png"


def confusion_figure(matrix: np.ndarray, labels: Sequence[str], title: str = "") -> Figure:
    """Row-normalised confusion matrix (gold rows, predicted columns) with counts in the cells."""
    matrix = np.asarray(matrix)
    rows = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    fig, ax = subplots(figsize=(6.5, 5.5))
    im = ax.imshow(norm, cmap="magma", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] < 0.6 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="fraction of gold row")
    return fig


def readout_labels(frame: pd.DataFrame) -> list[str]:
    """The label set of a readout table: its ``logp_<label>`` columns, else the 13 emotions."""
    return [c.removeprefix("logp_") for c in frame.columns if c.startswith("logp_")] or list(EMOTIONS)


def readout_confusion(frame: pd.DataFrame, title: str, labels: Sequence[str] | None = None) -> Figure | None:
    """The confusion figure of a readout table (``gold``/``pred`` columns); None when no gold label is known."""
    labels = list(labels) if labels is not None else readout_labels(frame)
    known = frame["gold"].isin(labels)
    if not known.any():
        return None
    gold = frame.loc[known, "gold"].map(labels.index).to_numpy()
    pred = frame.loc[known, "pred"].map(labels.index).to_numpy()
    return confusion_figure(confusion(gold, pred, len(labels)), labels, title)


def write_readout_figures(frame: pd.DataFrame, out: str | Path, title: str,
                          labels: Sequence[str] | None = None) -> list[Path]:
    """``confusion.png`` in ``out`` from a readout table (nothing when no gold label is known)."""
    fig = readout_confusion(frame, title, labels)
    return [] if fig is None else [save_figure(fig, Path(out) / CONFUSION_PNG)]


__all__ = ["CONFUSION_PNG", "confusion_figure", "readout_confusion", "readout_labels", "write_readout_figures"]
