"""The readout's confusion matrix (gold rows, predicted columns, counts in cells)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from emolens.labels import EMOTIONS
from emolens.metrics import confusion
from emolens.report.plotting import fig_png, subplots


def confusion_figure(frame: pd.DataFrame, title: str) -> bytes | None:
    labels = [c.removeprefix("logp_") for c in frame.columns if c.startswith("logp_")] or list(EMOTIONS)
    known = frame["gold"].isin(labels)
    if not known.any():
        return None
    gold = frame.loc[known, "gold"].map(labels.index).to_numpy()
    pred = frame.loc[known, "pred"].map(labels.index).to_numpy()
    matrix = confusion(gold, pred, len(labels))
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
    return fig_png(fig)


__all__ = ["confusion_figure"]
