"""What every report figure shares: site colours, the position a figure shows, the layer axis, PNG bytes.

Layers are 0-indexed in the tables and 1-indexed on every axis; *relative depth* is
``(layer + 1) / n_layers``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

SITE_COLORS = {"attn": "#d62728", "mlp": "#1f77b4", "resid": "#2ca02c", "attn_post": "#ff9896",
               "mlp_post": "#aec7e8", "heads": "#9467bd", "embed": "#7f7f7f", "final": "#17becf"}


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None, **kwargs):
    """``(figure, axes)`` like ``pyplot.subplots``, on a bare :class:`~matplotlib.figure.Figure`.

    No pyplot state: nothing to close, no backend chosen at import, and drawing a report in a
    notebook leaves its inline plots alone.
    """
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def fig_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (embedded in HTML as base64)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write the figure as a PNG file (what the CLI commands and study stages leave next to their tables)."""
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def numeric_positions(frame: pd.DataFrame) -> pd.DataFrame:
    """Positions as numbers (causal tables store them as text; clean rows have none)."""
    if "position" in frame and not pd.api.types.is_numeric_dtype(frame["position"]):
        frame = frame.assign(position=pd.to_numeric(frame["position"], errors="coerce"))
    return frame


def main_position(frame: pd.DataFrame) -> int | None:
    """The position figures show: -1 (the answer cue) when present."""
    if "position" not in frame:
        return None
    values = pd.to_numeric(frame["position"], errors="coerce").dropna()
    if values.empty:
        return None
    positions = sorted(set(int(p) for p in values))
    return -1 if -1 in positions else positions[-1]


def layer_axis(layers, n_layers: int | None, depth: bool):
    """x values for 0-indexed ``layers``: 1-indexed layers, or relative depth when ``depth`` and the depth is known."""
    layers = np.asarray(layers, dtype=float)
    return (layers + 1) / n_layers if depth and n_layers else layers + 1


__all__ = ["SITE_COLORS", "fig_png", "layer_axis", "main_position", "numeric_positions", "save_figure",
           "subplots"]
