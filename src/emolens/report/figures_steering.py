"""Steering figures: emotion promotion success by window (a panel per beta), appraisal-surgery outcome."""

from __future__ import annotations

import pandas as pd

from emolens.report.findings import promotion_success
from emolens.report.plotting import fig_png, subplots


def steering_figures(table: pd.DataFrame, n_layers: int | None = None) -> list[tuple[str, bytes]]:
    """Emotion promotion success by window (one panel per beta) and the appraisal-surgery outcome."""
    if table is None or table.empty:
        return []
    out = []
    promo = promotion_success(table)
    if len(promo):
        betas = sorted(promo.beta.unique())
        fig, axes = subplots(1, len(betas), figsize=(4.3 * len(betas), 3.3), squeeze=False, sharey=True)
        for ax, beta in zip(axes[0], betas, strict=True):
            g = promo[promo.beta == beta]
            for emotion, line in g.groupby("emotion", sort=False):
                line = line.sort_values("window_center")
                ax.plot(line.window_center + 1, line.value, marker="o", ms=3, label=emotion)
            rnd = g.groupby("window_center", as_index=False)["random"].mean().sort_values("window_center")
            ax.plot(rnd.window_center + 1, rnd.random, ls="--", color="grey", label="random directions")
            ax.axhline(0, color="grey", lw=0.6)
            ax.set_ylim(-1.05, 1.05)
            ax.set_title(f"β = {beta:g}", fontsize=9)
            ax.set_xlabel("window centre layer (1-indexed)")
        axes[0][0].set_ylabel("promotion success")
        axes[0][-1].legend(fontsize=6)
        fig.suptitle("emotion promotion (paper §7.2 success score)", fontsize=10)
        out.append(("emotion promotion", fig_png(fig)))
    surgery = table[(table.metric == "fraction") & (table.beta == table.beta.max()) & ~table.direction.isin(
        [f"{e}+" for e in promo.emotion.unique()] if len(promo) else [])]
    if len(surgery):
        windows = sorted(surgery.window.unique())
        mid = windows[len(windows) // 2]
        g = surgery[surgery.window == mid]
        piv = g.pivot_table(index="direction", columns="label", values="value", aggfunc="mean")
        clean = table[(table.metric == "fraction") & (table.beta == 0) & (table.window == mid)]
        if len(clean):
            piv.loc["(clean)"] = clean.groupby("label")["value"].mean()
        fig, ax = subplots(figsize=(8, 0.35 * len(piv) + 1.6))
        im = ax.imshow(piv.to_numpy(dtype=float), aspect="auto", cmap="magma", vmin=0, vmax=1)
        ax.set_yticks(range(len(piv.index)), piv.index, fontsize=7)
        ax.set_xticks(range(len(piv.columns)), piv.columns, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"predicted-label distribution under steering (window centre {mid + 1}, "
                     f"β = {table.beta.max():g})", fontsize=9)
        fig.colorbar(im, ax=ax, label="fraction of items")
        out.append(("appraisal surgery", fig_png(fig)))
    return out


__all__ = ["steering_figures"]
