"""Figures of the neuron analysis, drawn from its saved tables only (so a saved Parquet re-plots).

Three views answer the three questions of ``emolens neurons``: where the appraisal neurons are
(significant neurons per layer x appraisal), how sparse the code is (held-out R² versus the
number of neurons, against the dense probe), and whether the neurons matter (the ablation effect
of the top set against matched random sets, with intervals).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from emolens.report.plotting import save_figure, subplots

__all__ = ["plot_ablation", "plot_neuron_figures", "plot_significant", "plot_sparse"]


def plot_significant(counts: pd.DataFrame, path: str | Path, title: str = "") -> Path | None:
    """Heatmap of significant-neuron counts, ``counts`` indexed by layer with one column per appraisal."""
    if counts.empty:
        return None
    fig, ax = subplots(figsize=(1.2 + 0.42 * counts.shape[1], 1.5 + 0.28 * counts.shape[0]))
    im = ax.imshow(counts.to_numpy(dtype=float), aspect="auto", cmap="viridis")
    ax.set_xticks(range(counts.shape[1]), [str(c) for c in counts.columns], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(counts.shape[0]), [str(i) for i in counts.index], fontsize=7)
    ax.set_ylabel("layer")
    ax.set_title(title or "neurons with q < 0.05 (BH across neurons, per appraisal)", fontsize=9)
    fig.colorbar(im, ax=ax, label="neurons")
    return save_figure(fig, path)


def plot_sparse(sparse: pd.DataFrame, path: str | Path) -> Path | None:
    """Held-out R² versus k (log axis), one panel per layer, one line per appraisal with its 95% band;
    dense = dashed."""
    if sparse.empty:
        return None
    layers = sorted(sparse["layer"].unique())
    fig, axes = subplots(1, len(layers), figsize=(3.4 * len(layers), 3.2), squeeze=False, sharey=True)
    colours = matplotlib.colormaps["tab20"]
    for ax, layer in zip(axes[0], layers, strict=True):
        part = sparse[sparse["layer"] == layer]
        for j, (name, rows) in enumerate(part.groupby("appraisal", sort=False)):
            top = rows[rows["kind"] == "top-k"].sort_values("k")
            dense = rows[rows["kind"] == "dense"]
            colour = colours(j % 20)
            ax.plot(top["k"], top["r2"], marker=".", color=colour, lw=1, label=str(name))
            if {"r2_lo", "r2_hi"} <= set(top.columns):  # 95% held-out interval (older tables have none)
                ax.fill_between(top["k"], top["r2_lo"], top["r2_hi"], color=colour, alpha=0.15, lw=0)
            if len(dense):
                ax.axhline(float(dense["r2"].iloc[0]), color=colour, lw=0.7, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (top neurons by train |r|)")
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.axhline(0, color="grey", lw=0.5)
    axes[0, 0].set_ylabel("held-out R²")
    axes[0, -1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, path)


def plot_ablation(ablation: pd.DataFrame, path: str | Path) -> Path | None:
    """Top-set vs matched-random-set effect on the theory emotion, with 95% item-bootstrap intervals."""
    data = ablation.dropna(subset=["effect"]) if "effect" in ablation else ablation.iloc[0:0]
    if data.empty:
        return None
    fig, ax = subplots(figsize=(1.8 + 1.2 * len(data), 3.2))
    x = np.arange(len(data))
    for offset, (col, lo, hi, label) in zip((-0.12, 0.12), (("effect", "effect_lo", "effect_hi", "top-k neurons"),
                                                           ("random_effect", "random_lo", "random_hi",
                                                            "matched random sets")), strict=True):
        y = data[col].to_numpy(float)
        err = np.vstack([y - data[lo].to_numpy(float), data[hi].to_numpy(float) - y])
        ax.errorbar(x + offset, y, yerr=err, fmt="o", capsize=3, label=label)
    ax.set_xticks(x, [f"{a}\n→ {t}\np={p:.2g}" for a, t, p in zip(data["appraisal"], data["target"], data["p"],
                                                                    strict=True)], fontsize=7)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("Δ log p(target emotion) after mean ablation")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_neuron_figures(out_dir: str | Path, counts: pd.DataFrame | None = None, sparse: pd.DataFrame | None = None,
                        ablation: pd.DataFrame | None = None) -> list[Path]:
    """Every neuron figure whose table is given, into ``out_dir``; returns the files written."""
    out_dir = Path(out_dir)
    made = [
        plot_significant(counts, out_dir / "neurons_significant.png") if counts is not None else None,
        plot_sparse(sparse, out_dir / "neurons_sparse.png") if sparse is not None else None,
        plot_ablation(ablation, out_dir / "neurons_ablation.png") if ablation is not None else None,
    ]
    return [p for p in made if p is not None]
