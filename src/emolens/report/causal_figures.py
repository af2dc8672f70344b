"""Heatmaps of causal results, drawn from the tidy table alone (so a saved Parquet re-plots).

Two views match the paper's figures: layer-window centre x site (one panel per span and kind)
and layer-window centre x position (one panel per site).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emolens.report.figures import plt, save_figure


def _heatmap(ax, table: pd.DataFrame, title: str, vmin: float | None, vmax: float | None):
    im = ax.imshow(table.to_numpy(dtype=float), aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], fontsize=7)
    ax.set_yticks(range(table.shape[0]), [str(r) for r in table.index], fontsize=8)
    ax.set_xlabel("window centre (layer)")
    ax.set_title(title, fontsize=9)
    return im


def _limits(metric: str) -> tuple[float | None, float | None]:
    return (None, None) if metric.startswith("delta") else (0.0, 1.0)


def plot_site_heatmaps(frame: pd.DataFrame, metric: str, path: str | Path, position: str = "-1") -> Path | None:
    """Window centre x site, one panel per (span, kind), at one position; None when nothing to draw."""
    data = frame[(frame["metric"] == metric) & (frame["position"] == position) & (frame["window_span"] > 0)
                 & frame["head"].isna()]
    if data.empty:
        return None
    panels = sorted(data.groupby(["window_span", "kind"]).groups)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.2 + 0.9 * len(panels) * max(1, data["site"].nunique()) / 2),
                             squeeze=False)
    vmin, vmax = _limits(metric)
    for ax, (span, kind) in zip(axes[:, 0], panels, strict=True):
        part = data[(data["window_span"] == span) & (data["kind"] == kind)]
        table = part.pivot_table(index="site", columns="window_center", values="value")
        im = _heatmap(ax, table, f"{metric}: {kind}, span {span}, position {position}", vmin, vmax)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_position_heatmaps(frame: pd.DataFrame, metric: str, path: str | Path) -> Path | None:
    """Window centre x position, one panel per (site, kind, span); None with a single position."""
    data = frame[(frame["metric"] == metric) & (frame["window_span"] > 0) & frame["head"].isna()]
    if data.empty or data["position"].nunique() < 2:
        return None
    panels = sorted(data.groupby(["site", "kind", "window_span"]).groups)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.5 + 1.4 * len(panels)), squeeze=False)
    vmin, vmax = _limits(metric)
    for ax, (site, kind, span) in zip(axes[:, 0], panels, strict=True):
        part = data[(data["site"] == site) & (data["kind"] == kind) & (data["window_span"] == span)]
        table = part.pivot_table(index="position", columns="window_center", values="value")
        im = _heatmap(ax, table, f"{metric}: {site} {kind}, span {span}", vmin, vmax)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_all(frame: pd.DataFrame, out_dir: str | Path, metrics: tuple[str, ...]) -> list[Path]:
    """Every heatmap that the table supports, one file per metric and view."""
    out = []
    for metric in metrics:
        for path in (plot_site_heatmaps(frame, metric, Path(out_dir) / f"heatmap_{metric}_sites.png"),
                     plot_position_heatmaps(frame, metric, Path(out_dir) / f"heatmap_{metric}_positions.png")):
            if path is not None:
                out.append(path)
    return out
