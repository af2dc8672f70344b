"""Prompt-robustness figures: readout accuracy per prompt variant, and each analysis' depth profile per variant."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd

from emolens.report.plotting import fig_png, layer_axis, subplots


def robustness_figure(table: pd.DataFrame) -> bytes:
    t = readout_rows(table)
    t = t[t.metric == "accuracy"]
    fig, ax = subplots(figsize=(7, 3))
    x = np.arange(len(t))
    ax.bar(x, t.value, color="#4c72b0")
    ax.errorbar(x, t.value, yerr=[t.value - t.ci_low, t.ci_high - t.value], fmt="none", color="black", lw=1)
    ax.axhline(float(t.chance.max()), ls=":", color="grey", label="majority baseline")
    ax.set_xticks(x, t.variant, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("readout accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title(f"prompt robustness (n={int(t.n.iloc[0])} items per variant)", fontsize=9)
    return fig_png(fig)


def readout_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The readout rows of a robustness table (tables from before the analyses hold only those)."""
    return table[table.analysis == "readout"] if "analysis" in table else table


#: Per robustness analysis: the metric drawn and summarised, and whether its extreme is a peak or a dip.
ROBUSTNESS_METRICS = {"probe": ("accuracy", "max"), "ablate": ("agreement", "min"), "patch": ("transfer", "max")}


def robustness_analysis_figure(table: pd.DataFrame, analysis: str, n_layers: int | None = None) -> bytes | None:
    """One panel per site (and window span): the analysis' metric against relative depth, a line per
    prompt variant (the probe by layer, ablation and patching by window centre)."""
    metric, _ = ROBUSTNESS_METRICS[analysis]
    t = table[(table.analysis == analysis) & (table.metric == metric)].dropna(subset=["layer"])
    if t.empty:
        return None
    panels = list(t.groupby(["site", "window_span"], sort=False).groups)
    fig, axes = subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False, sharey=True)
    variants = list(dict.fromkeys(t.variant))
    colors = matplotlib.colormaps["tab10"]
    for ax, (site, span) in zip(axes[0], panels, strict=True):
        g = t[(t.site == site) & (t.window_span == span)]
        for i, variant in enumerate(variants):
            line = g[g.variant == variant].sort_values("layer")
            if line.empty:
                continue
            x = layer_axis(line.layer, n_layers, True)
            ax.plot(x, line.value, marker="o", ms=2.5, lw=1.2, color=colors(i % 10), label=variant,
                    ls="-" if i < 10 else "--")
        if analysis == "probe" and g.chance.notna().any():
            ax.axhline(float(g.chance.max()), ls=":", color="grey", lw=1)
        ax.set_title(f"{site}" + (f", span {int(span)}" if span else ""), fontsize=9)
        ax.set_xlabel("relative depth" if n_layers else "layer (1-indexed)")
        ax.set_ylim(-0.02, 1.02)
    what = {"probe": "emotion probe at the answer cue (dotted: majority chance)",
            "ablate": "zero ablation at the answer cue", "patch": "activation patching at the answer cue"}[analysis]
    axes[0][0].set_ylabel(f"{metric}")
    axes[0][-1].legend(fontsize=6, title="prompt variant", title_fontsize=6)
    fig.suptitle(f"prompt robustness: {what}", fontsize=10)
    return fig_png(fig)


__all__ = ["ROBUSTNESS_METRICS", "readout_rows", "robustness_analysis_figure", "robustness_figure"]
