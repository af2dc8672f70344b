"""Causal-effect heatmaps, drawn from the tidy causal table alone (so a saved Parquet re-plots).

Files for ``emolens ablate/patch/knockout`` (:func:`plot_all`): layer-window centre x site (one
panel per span and kind) and window centre x position (one panel per site), as the paper's
figures; and the report's annotated heatmaps (:func:`effect_heatmaps`: rows kind x site).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from emolens.report.plotting import fig_png, numeric_positions, save_figure, subplots


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
    fig, axes = subplots(len(panels), 1, figsize=(9, 1.2 + 0.9 * len(panels) * max(1, data["site"].nunique()) / 2),
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
    fig, axes = subplots(len(panels), 1, figsize=(9, 1.5 + 1.4 * len(panels)), squeeze=False)
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


def effect_heatmaps(table: pd.DataFrame, title: str, n_layers: int | None = None,
                    metrics: Sequence[str] | None = None) -> list[tuple[str, bytes]]:
    """One heatmap (rows: kind x site, columns: window centre) per (analysis, span, position, metric)."""
    if table is None or table.empty:
        return []
    t = numeric_positions(table.copy())
    if metrics is not None and set(metrics) & set(t.metric):
        t = t[t.metric.isin(metrics)]
    if "kind" in t:
        t = t[t["kind"] != "clean"]
    if "head" in t:
        t = t[t["head"].isna()] if t["head"].notna().any() and t["head"].isna().any() else t
    for col in ("analysis", "kind", "position", "window_span"):
        if col not in t:
            t[col] = "" if col in ("analysis", "kind") else 0
    out = []
    for (_analysis, span, pos, metric), g in t.groupby(["analysis", "window_span", "position", "metric"], sort=False,
                                                        dropna=False):
        g = g.assign(row=g["kind"].astype(str) + " " + g["site"].astype(str))
        piv = g.pivot_table(index="row", columns="window_center", values="value")
        if piv.empty:
            continue
        fig, ax = subplots(figsize=(max(4.0, 0.35 * piv.shape[1] + 2), 0.45 * piv.shape[0] + 1.4))
        vals = piv.to_numpy(dtype=float)
        im = ax.imshow(vals, aspect="auto", cmap="magma", vmin=min(0.0, np.nanmin(vals)),
                       vmax=max(1.0, np.nanmax(vals)))
        ax.set_yticks(range(len(piv.index)), piv.index, fontsize=8)
        ax.set_xticks(range(len(piv.columns)), [str(int(c) + 1) for c in piv.columns], fontsize=7)
        for i in range(vals.shape[0]):
            for j in range(vals.shape[1]):
                if np.isfinite(vals[i, j]):
                    ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if vals[i, j] < 0.6 else "black")
        ax.set_xlabel("window centre layer (1-indexed)")
        pos_text = str(int(pos)) if isinstance(pos, (int, float, np.number)) and np.isfinite(pos) else str(pos)
        name = f"{metric}, span {span}, position {pos_text}"
        ax.set_title(f"{title}: {name}", fontsize=9)
        fig.colorbar(im, ax=ax)
        out.append((name, fig_png(fig)))
    return out


__all__ = ["effect_heatmaps", "plot_all", "plot_position_heatmaps", "plot_site_heatmaps"]
