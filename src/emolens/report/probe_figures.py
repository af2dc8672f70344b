"""Probe figures, drawn from a probe table (``probes.parquet``) alone.

Files for ``emolens probe`` and the probe stage (:func:`write_probe_figures`: layer x site and
layer x position heatmaps per task, emotion curves with controls, the appraisal R² map) and the
report's views (curves by depth, position x layer per site, appraisal heatmap).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from emolens.report.plotting import SITE_COLORS, fig_png, layer_axis, main_position, save_figure, subplots


def probe_curves(ax, probes: pd.DataFrame, n_layers: int | None = None, metric: str = "accuracy",
                 task: str = "emotion", legend: bool = True, depth: bool = False) -> bool:
    """Held-out probe metric by layer, one line per site, CI band, shuffled control dashed, chance dotted."""
    t = probes[(probes.task == task) & (probes.metric == metric)]
    if t.empty:
        return False
    pos = main_position(t)
    t = t[t.position == pos] if pos is not None else t
    ctrl = probes[(probes.task == f"{task}/shuffled") & (probes.metric == metric)]
    for site, g in t.groupby("site", sort=False):
        g = g.sort_values("layer")
        x = layer_axis(g.layer, n_layers, depth)
        color = SITE_COLORS.get(site)
        ax.plot(x, g.value, marker="o", ms=3, label=site, color=color)
        ax.fill_between(x, g.ci_low, g.ci_high, alpha=0.2, color=color)
        c = ctrl[(ctrl.site == site) & (ctrl.position == pos)].sort_values("layer")
        if len(c):
            ax.plot(layer_axis(c.layer, n_layers, depth), c.value, ls="--", lw=1, color=color, alpha=0.7)
    ax.axhline(float(t.chance.iloc[0]), ls=":", color="grey", lw=1, label="chance (majority)")
    ax.set_ylabel(f"probe {metric.replace('_', ' ')}")
    ax.set_xlabel("relative depth" if depth else "layer (1-indexed)")
    ax.set_ylim(0, 1.02)
    if legend:
        ax.legend(fontsize=7, title="dashed: shuffled labels" if len(ctrl) else None, title_fontsize=7)
    return True


def probe_heatmaps(probes: pd.DataFrame, metric: str = "accuracy") -> bytes | None:
    t = probes[(probes.task == "emotion") & (probes.metric == metric)]
    if t.empty or t.position.nunique() < 2:
        return None
    sites = list(dict.fromkeys(t.site))
    fig, axes = subplots(1, len(sites), figsize=(4.2 * len(sites), 3.2), squeeze=False)
    for ax, site in zip(axes[0], sites, strict=True):
        piv = t[t.site == site].pivot_table(index="position", columns="layer", values="value").sort_index(
            ascending=False)
        im = ax.imshow(piv.to_numpy(), aspect="auto", cmap="magma", vmin=0, vmax=1)
        ax.set_yticks(range(len(piv.index)), [str(p) for p in piv.index])
        ax.set_xticks(range(len(piv.columns)), [str(c + 1) for c in piv.columns], fontsize=6)
        ax.set_title(site)
        ax.set_xlabel("layer (1-indexed)")
        ax.set_ylabel("position")
    fig.colorbar(im, ax=axes[0].tolist(), label=f"probe {metric}")
    return fig_png(fig)


def appraisal_heatmap(probes: pd.DataFrame, site: str = "resid") -> bytes | None:
    t = probes[(probes.task == "appraisal") & (probes.metric == "r2")]
    if t.empty:
        return None
    if site not in set(t.site):
        site = t.site.iloc[0]
    pos = main_position(t)
    t = t[(t.site == site) & (t.position == pos)]
    piv = t.pivot_table(index="target", columns="layer", values="value")
    piv = piv.loc[piv.max(axis=1).sort_values(ascending=False).index]
    fig, ax = subplots(figsize=(7, 0.25 * len(piv) + 1.5))
    im = ax.imshow(piv.to_numpy(), aspect="auto", cmap="viridis", vmin=min(0, float(np.nanmin(piv.to_numpy()))),
                   vmax=max(0.1, float(np.nanmax(piv.to_numpy()))))
    ax.set_yticks(range(len(piv.index)), piv.index, fontsize=7)
    ax.set_xticks(range(len(piv.columns)), [str(c + 1) for c in piv.columns], fontsize=6)
    ax.set_xlabel("layer (1-indexed)")
    ax.set_title(f"appraisal probes: held-out R² ({site}, position {pos})")
    fig.colorbar(im, ax=ax, label="R²")
    return fig_png(fig)


def write_probe_figures(table: pd.DataFrame, out: Path) -> list[Path]:
    """Heatmaps (layer x site at -1, layer x position for resid) per classification task, probe curves,
    and an appraisal x layer R² map."""
    paths = []
    for task in ("emotion", "first_word", "selectivity"):
        # selectivity: chance-normalised emotion minus control-task accuracy (probes.control_task)
        part = table[(table.task == task) & (table.metric == ("normalised_accuracy" if task == "selectivity"
                                                                else "accuracy"))]
        if part.empty:
            continue
        lab = "accuracy" if task != "selectivity" else "selectivity (chance-normalised, vs control task)"
        at_last = part[part.position == -1]
        if not at_last.empty:
            paths.append(plot_heatmap(at_last, "site", out / f"heatmap_{task}_sites.png",
                                      f"{task}: {lab}, position -1", diverging=task == "selectivity"))
        sites = list(dict.fromkeys(part.site))
        site = "resid" if "resid" in sites else sites[-1]
        by_pos = part[part.site == site]
        if by_pos.position.nunique() > 1:
            paths.append(plot_heatmap(by_pos, "position", out / f"heatmap_{task}_positions.png",
                                      f"{task}: {lab}, {site}", diverging=task == "selectivity"))
    emo = table[(table.task == "emotion") & (table.metric == "accuracy") & (table.position == -1)]
    if not emo.empty:
        paths.append(plot_curves(table, out / "curve_emotion.png"))
    app = table[(table.task == "appraisal") & (table.metric == "r2")]
    if not app.empty:
        paths.append(plot_appraisal_map(app, out / "heatmap_appraisal_r2.png"))
    return paths


def plot_heatmap(part: pd.DataFrame, rows: str, path: Path, title: str, diverging: bool = False) -> Path:
    """``rows`` (site or position) x layer grid of ``value``; the best cell is outlined."""

    grid = part.pivot_table(index=rows, columns="layer", values="value", aggfunc="first")
    if rows == "site":
        grid = grid.reindex([s for s in dict.fromkeys(part.site)])
    else:
        grid = grid.sort_index(ascending=False)  # -1 on top
    vals = grid.to_numpy(dtype=float)
    fig, ax = subplots(figsize=(max(5.0, 0.38 * vals.shape[1] + 2), 0.55 * vals.shape[0] + 1.6))
    if diverging:
        m = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0
        im = ax.imshow(vals, cmap="coolwarm", vmin=-m, vmax=m, aspect="auto")
    else:
        im = ax.imshow(vals, cmap="magma", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(vals.shape[1]), [str(c + 1) for c in grid.columns], fontsize=7)
    ax.set_yticks(range(vals.shape[0]), [str(r) for r in grid.index])
    ax.set_xlabel("layer (1-indexed)")
    ax.set_ylabel(rows)
    if np.isfinite(vals).any():
        i, j = np.unravel_index(np.nanargmax(vals), vals.shape)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="cyan", linewidth=2))
        title += f" (best {vals[i, j]:.3f} at {grid.index[i]}, layer {grid.columns[j] + 1})"
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_curves(table: pd.DataFrame, path: Path) -> Path:
    """Emotion accuracy over layers at position -1 for each site with 95% CI bands; shuffled and
    first-word controls dashed and dotted, chance as a grey line."""

    base = table[(table.metric == "accuracy") & (table.position == -1)]
    sites = list(dict.fromkeys(base[base.task == "emotion"].site))
    fig, ax = subplots(figsize=(7, 4.2))
    colors = dict(zip(sites, matplotlib.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for task, style in (("emotion", "-"), ("emotion/shuffled", "--"), ("first_word", ":")):
        for site in sites:
            cur = base[(base.task == task) & (base.site == site)].sort_values("layer")
            if cur.empty:
                continue
            x = cur.layer.to_numpy() + 1
            ax.plot(x, cur.value, style, color=colors[site], label=f"{site} {task}" if task != "emotion" else site,
                    linewidth=1.6 if task == "emotion" else 1.0)
            if task == "emotion":
                ax.fill_between(x, cur.ci_low, cur.ci_high, color=colors[site], alpha=0.2, linewidth=0)
    chance = base[base.task == "emotion"].chance
    if len(chance):
        ax.axhline(float(chance.iloc[0]), color="grey", linewidth=0.8, label="chance (majority)")
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (1-indexed)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("emotion probe at position -1 (bands: 95% CI)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def plot_appraisal_map(app: pd.DataFrame, path: Path) -> Path:
    """Appraisal x layer test R² at position -1 for the resid site (else the last site); best per row marked."""

    sites = list(dict.fromkeys(app.site))
    site = "resid" if "resid" in sites else sites[-1]
    part = app[(app.site == site) & (app.position == -1)]
    grid = part.pivot_table(index="target", columns="layer", values="value", aggfunc="first")
    grid = grid.reindex(list(dict.fromkeys(part.target)))
    vals = grid.to_numpy(dtype=float)
    fig, ax = subplots(figsize=(max(5.0, 0.38 * vals.shape[1] + 3), 0.3 * vals.shape[0] + 1.6))
    im = ax.imshow(np.clip(vals, -0.2, 1), cmap="magma", vmin=-0.2, vmax=1, aspect="auto")
    for i in range(vals.shape[0]):
        if np.isfinite(vals[i]).any():
            j = int(np.nanargmax(vals[i]))
            ax.plot(j, i, marker="*", color="cyan", markersize=6)
    ax.set_xticks(range(vals.shape[1]), [str(c + 1) for c in grid.columns], fontsize=7)
    ax.set_yticks(range(vals.shape[0]), list(grid.index), fontsize=7)
    ax.set_xlabel("layer (1-indexed)")
    fig.colorbar(im, ax=ax, label="test R² (clipped at -0.2)")
    ax.set_title(f"appraisal probes, {site} at -1 (star: best layer)", fontsize=9)
    return save_figure(fig, path)


__all__ = ["appraisal_heatmap", "plot_appraisal_map", "plot_curves", "plot_heatmap", "probe_curves", "probe_heatmaps",
           "write_probe_figures"]
