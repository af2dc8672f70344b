"""Causal-effect heatmaps for the report: rows kind x site, columns window centre, values annotated."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from emolens.report.plotting import fig_png, numeric_positions, subplots


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


__all__ = ["effect_heatmaps"]
