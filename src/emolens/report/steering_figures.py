"""Steering figures, drawn from the steering table only (``steering.parquet``).

Files for ``emolens steer`` (:func:`plot_label_bars`, :func:`plot_dose_response`) and the report's
views (:func:`steering_figures`: emotion promotion by window per beta, appraisal-surgery outcome).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from emolens.report.findings import promotion_success
from emolens.report.plotting import fig_png, save_figure, subplots
from emolens.steering.directions import Term
from emolens.steering.sweep import pick_control
from emolens.steering.theory import EMOTION_NULL_SEP, RESIDUALISED


def plot_label_bars(frame: pd.DataFrame, direction: str, path: str | Path, window: int | None = None,
                    position: str | None = None) -> Path:
    """Stacked bars: the predicted-label distribution at each β for one direction and its controls.

    One window and position (default: the middle window, the first position), so the bars show
    the paper's appraisal-surgery picture with the controls beside it. Panels: the direction, its
    residualised-on-emotion refit (when fitted), its specificity control, and the *summaries* of
    the random directions and of its within-emotion refits: the mean share per label, with the
    2.5-97.5 percentile band of that label's share across the controls as whiskers measured from
    the segment's base (so a whisker may pass 1: the other labels stay at their means). A panel per control (a study has
    ~120) took three quarters of the steer stage to draw and showed nothing a summary does not.
    Each panel is one ``bar`` call over all its segments.
    """
    sub = frame[frame["metric"] == "fraction"]
    windows = sorted(sub["window"].unique())
    window = windows[len(windows) // 2] if window is None else window
    position = sub["position"].iloc[0] if position is None else position
    sub = sub[(sub["window"] == window) & (sub["position"] == position)]
    labels = list(dict.fromkeys(sub["label"]))
    panels = label_bar_panels(sub, direction)
    cmap = matplotlib.colormaps["tab20"]
    colors = [cmap(k % 20) for k in range(len(labels))]
    fig, axes = subplots(1, len(panels), figsize=(2.2 * len(panels) + 1.5, 3.6), sharey=True, squeeze=False)
    for ax, (title, names) in zip(axes[0], panels.items(), strict=True):
        shares = sub[sub["direction"].isin(names)].pivot_table(
            index=["direction", "beta"], columns="label", values="value").reindex(columns=labels).fillna(0.0)
        by_beta = shares.groupby(level="beta")
        mean = by_beta.mean()
        ticks = [f"{b:g}" for b in mean.index]
        heights = mean.to_numpy().T  # [label, beta]
        bottoms = np.vstack([np.zeros(len(mean)), np.cumsum(heights, axis=0)[:-1]])
        yerr = None
        if len(names) > 1:  # a summary: the band across the controls around each label's mean share
            low, high = by_beta.quantile(0.025).to_numpy().T, by_beta.quantile(0.975).to_numpy().T
            yerr = np.stack([(heights - low).ravel(), (high - heights).ravel()]).clip(min=0)
        ax.bar(ticks * len(labels), heights.ravel(), bottom=bottoms.ravel(),
               color=[c for c in colors for _ in ticks], yerr=yerr, ecolor="black",
               error_kw={"elinewidth": 0.6, "capsize": 1.5})
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("β")
    axes[0][0].set_ylabel("share of items")
    axes[0][-1].legend([Patch(color=c) for c in colors], labels, fontsize=6, bbox_to_anchor=(1.02, 1),
                       loc="upper left")
    layers = sub["layers"].iloc[0] if len(sub) else ""
    fig.suptitle(f"predicted label by β; window centre {window} (layers {layers}, 0-indexed), {position}\n"
                 "summary panels: mean share per label; whiskers: its 2.5-97.5% range across the controls, "
                 "measured from the segment's base", fontsize=9)
    return save_figure(fig, path)


def label_bar_panels(sub: pd.DataFrame, direction: str) -> dict[str, list[str]]:
    """``{panel title: directions it draws}`` for :func:`plot_label_bars`: the direction, its
    residualised refit, its specificity control (the one the sweep picked for it, see
    :func:`~emolens.steering.sweep.pick_control`), then the random directions and the direction's
    within-emotion refits as one summary panel each. Controls the table lacks are left out."""
    kinds = sub.drop_duplicates("direction").set_index("direction")["kind"]
    panels: dict[str, list[str]] = {direction: [direction]}
    resid = f"{direction}{RESIDUALISED}"
    if resid in kinds.index:
        panels[resid] = [resid]
    controls = [n.removeprefix("control:").rstrip("+") for n in kinds.index[kinds == "specificity"]]
    terms = [Term(part.strip().rstrip("+-"), 1.0) for part in direction.split(",")]
    control = pick_control(terms, controls) if controls else None
    if control is not None:
        panels[f"control:{control}+"] = [f"control:{control}+"]
    for title, names in (("random (mean of {})", list(kinds.index[kinds == "random"])),
                         ("within-emotion refits (mean of {})",
                          [n for n in kinds.index[kinds == "emotion_null"]
                           if n.startswith(f"{direction}{EMOTION_NULL_SEP}")])):
        if names:
            panels[title.format(len(names))] = names
    return panels


def plot_dose_response(frame: pd.DataFrame, path: str | Path, position: str | None = None) -> Path:
    """Success score vs β for each real direction's most promoted label, with its controls' scores
    for the same label (mean over random seeds), one panel per window; bands are the 95% CIs."""
    sub = frame[frame["metric"] == "success"]
    position = sub["position"].iloc[0] if position is None else position
    sub = sub[sub["position"] == position]
    windows = sorted(sub["window"].unique())
    fig, axes = subplots(1, len(windows), figsize=(3.2 * len(windows) + 1, 3.2), sharey=True, squeeze=False)
    top = sub["beta"].max()
    for ax, window in zip(axes[0], windows, strict=True):
        w = sub[sub["window"] == window]
        for name in w.loc[w["kind"] == "real", "direction"].unique():
            d = w[w["direction"] == name]
            target = d[d["beta"] == top].sort_values("value").iloc[-1]["label"]
            curve = d[d["label"] == target].sort_values("beta")
            line = ax.plot(curve["beta"], curve["value"], marker="o", label=f"{name} → {target}")[0]
            ax.fill_between(curve["beta"], curve["ci_low"], curve["ci_high"], alpha=0.15, color=line.get_color())
            for kind, style in (("specificity", "--"), ("random", ":")):
                ctrl = w[(w["kind"] == kind) & (w["label"] == target)].groupby("beta")["value"].mean()
                if len(ctrl):
                    ax.plot(ctrl.index, ctrl.to_numpy(), style, color=line.get_color(), alpha=0.7)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"window centre {window} (0-indexed)", fontsize=8)
        ax.set_xlabel("β")
    axes[0][0].set_ylabel("success score")
    axes[0][-1].legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(f"dose-response at {position}; dashed: specificity control, dotted: random (mean)", fontsize=9)
    return save_figure(fig, path)


def surgery_table(table: pd.DataFrame, promotion: Sequence[str] = ()) -> tuple[int, pd.DataFrame] | None:
    """The appraisal-surgery panel's data: at the middle window and the largest β, the predicted-label
    fractions (rows: each real direction but the emotion ``promotion`` ones, the random directions'
    mean, the clean run; columns: labels). The null directions stay out one by one: a row each is
    noise, and made the figure hundreds of rows tall."""
    top = (table.metric == "fraction") & (table.beta == table.beta.max())
    kind = table["kind"] if "kind" in table else pd.Series("real", index=table.index)
    surgery = table[top & (kind == "real") & ~table.direction.isin(list(promotion))]
    if not len(surgery):
        return None
    windows = sorted(surgery.window.unique())
    mid = windows[len(windows) // 2]
    piv = surgery[surgery.window == mid].pivot_table(index="direction", columns="label", values="value",
                                                     aggfunc="mean")
    rand = table[top & (table.window == mid) & (kind == "random")]
    if len(rand):
        piv.loc["(random directions, mean)"] = rand.groupby("label")["value"].mean()
    clean = table[(table.metric == "fraction") & (table.beta == 0) & (table.window == mid)]
    if len(clean):
        piv.loc["(clean)"] = clean.groupby("label")["value"].mean()
    return int(mid), piv


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
    got = surgery_table(table, [f"{e}+" for e in promo.emotion.unique()] if len(promo) else [])
    if got is not None:
        mid, piv = got
        fig, ax = subplots(figsize=(8, 0.35 * len(piv) + 1.6))
        im = ax.imshow(piv.to_numpy(dtype=float), aspect="auto", cmap="magma", vmin=0, vmax=1)
        ax.set_yticks(range(len(piv.index)), piv.index, fontsize=7)
        ax.set_xticks(range(len(piv.columns)), piv.columns, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"predicted-label distribution under steering (window centre {mid + 1}, "
                     f"β = {table.beta.max():g})", fontsize=9)
        fig.colorbar(im, ax=ax, label="fraction of items")
        out.append(("appraisal surgery", fig_png(fig)))
    return out


__all__ = ["label_bar_panels", "plot_dose_response", "plot_label_bars", "steering_figures", "surgery_table"]
