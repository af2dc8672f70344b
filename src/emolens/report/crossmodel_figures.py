"""Cross-model figures from the saved tables: CKA depth x depth, RSA against depth, transfer vs native."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from emolens.report.plotting import save_figure, subplots

__all__ = ["plot_cka", "plot_crossmodel_figures", "plot_rsa", "plot_transfer"]


def plot_cka(cka: pd.DataFrame, path: str | Path) -> Path | None:
    """Linear CKA of every layer pair, axes in relative depth ``(layer + 1) / n_layers``."""
    if cka.empty:
        return None
    grid = cka.pivot_table(index="depth_a", columns="depth_b", values="cka")
    fig, ax = subplots(figsize=(5.5, 4.6))
    im = ax.imshow(grid.to_numpy(), origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=1,
                   extent=(grid.columns.min(), grid.columns.max(), grid.index.min(), grid.index.max()))
    ax.set_xlabel(f"{cka['model_b'].iloc[0]} relative depth")
    ax.set_ylabel(f"{cka['model_a'].iloc[0]} relative depth")
    ax.set_title(f"linear CKA, {int(cka['n_items'].iloc[0])} shared items", fontsize=9)
    fig.colorbar(im, ax=ax, label="CKA")
    return save_figure(fig, path)


def plot_rsa(rsa: pd.DataFrame, path: str | Path) -> Path | None:
    """Spearman rho of emotion-centroid distance matrices vs relative depth; filled markers p <= .05."""
    if rsa.empty:
        return None
    fig, ax = subplots(figsize=(6, 3.4))
    for (_kind, model, other), rows in rsa.groupby(["kind", "model", "other"], sort=False):
        rows = rows.sort_values("depth")
        line, = ax.plot(rows["depth"], rows["rho"], lw=1, label=f"{model} vs {other}")
        sig = rows["p"] <= 0.05
        ax.scatter(rows["depth"][sig], rows["rho"][sig], color=line.get_color(), s=14)
        ax.scatter(rows["depth"][~sig], rows["rho"][~sig], facecolors="none", edgecolors=line.get_color(), s=14)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("relative depth")
    ax.set_ylabel("RSA (Spearman rho)")
    ax.legend(fontsize=6)
    return save_figure(fig, path)


def plot_transfer(transfer: pd.DataFrame, path: str | Path) -> Path | None:
    """Emotion-probe accuracy native vs transferred per depth and direction, with intervals."""
    data = transfer[transfer["measure"] == "emotion_accuracy"] if not transfer.empty else transfer
    if data.empty:
        return None
    fig, ax = subplots(figsize=(6, 3.4))
    for (src, tgt), rows in data.groupby(["probe_model", "mapped_model"], sort=False):
        rows = rows.sort_values("depth")
        x = rows["depth"].to_numpy(float)
        for col, style in (("native", "-"), ("transferred", "--")):
            y = rows[col].to_numpy(float)
            err = np.vstack([y - rows[f"{col}_lo"].to_numpy(float), rows[f"{col}_hi"].to_numpy(float) - y])
            label = f"{src} probe: native" if col == "native" else f"{src} probe on mapped {tgt}"
            ax.errorbar(x, y, yerr=err, ls=style, marker="o", ms=3, capsize=2, label=label)
    ax.axhline(float(data["chance"].max()), color="grey", lw=0.5, ls=":")
    ax.set_xlabel("relative depth")
    ax.set_ylabel("emotion accuracy (held-out half)")
    ax.legend(fontsize=6)
    return save_figure(fig, path)


def plot_crossmodel_figures(out_dir: str | Path, tables) -> list[Path]:
    """All cross-model figures into ``out_dir`` from the tables of :func:`emolens.crossmodel.compare_models`."""
    out_dir = Path(out_dir)
    made = [plot_cka(tables["cka"], out_dir / "crossmodel_cka.png"),
            plot_rsa(tables["rsa"], out_dir / "crossmodel_rsa.png"),
            plot_transfer(tables["transfer"], out_dir / "crossmodel_transfer.png")]
    return [p for p in made if p is not None]
