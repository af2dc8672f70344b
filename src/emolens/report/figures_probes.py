"""Probe figures: held-out metric by layer (one line per site), position x layer and appraisal heatmaps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from emolens.report.plotting import SITE_COLORS, fig_png, layer_axis, main_position, subplots


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


__all__ = ["appraisal_heatmap", "probe_curves", "probe_heatmaps"]
