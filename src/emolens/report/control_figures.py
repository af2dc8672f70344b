"""Control-study figures, drawn from its tables only (``control_effects``, ``control_capability``).

* :func:`dose_response_figure` -- per judge, the paired change versus the clean replies at each
  β, one line per steering direction with its item-clustered interval, and the instructed
  baseline as a horizontal band (it has no β).
* :func:`tradeoff_figure` -- control gained (change in VADER valence) against capability lost
  (perplexity ratio on neutral text; readout accuracy change), one point per (direction, β), the
  instruction at zero cost, and the verdict's breaking thresholds as dashed lines.
* :func:`capability_figure` -- perplexity ratio, readout accuracy and degenerate-reply rate versus β.
"""

from __future__ import annotations

import pandas as pd

from emolens.report.plotting import subplots

#: Judge metrics drawn in the dose-response figure, with their axis labels.
DOSE_METRICS: tuple[tuple[str, str], ...] = (
    ("vader_compound", "Δ VADER valence"), ("nrc_anger", "Δ NRC anger density"),
    ("readout_valence", "Δ clean-model readout valence"), ("safety_any", "Δ hostile/blaming/hopeless rate"),
    ("worse", "worse-than-clean rate"),
)

__all__ = ["capability_figure", "dose_response_figure", "tradeoff_figure"]


def _steered(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[~frame["kind"].isin(["clean", "instructed"])]


def dose_response_figure(effects: pd.DataFrame):
    """One panel per judge metric: Δ vs β per direction (interval as a band), instruction as a band."""
    metrics = [(m, lab) for m, lab in DOSE_METRICS if m in set(effects["metric"])]
    fig, axes = subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.2), squeeze=False)
    steered = _steered(effects)
    for ax, (metric, label) in zip(axes[0], metrics, strict=True):
        part = steered[steered["metric"] == metric]
        for direction, g in part.groupby("direction", sort=False):
            origin = pd.DataFrame({"beta": [0.0], "delta": [0.0], "ci_low": [0.0], "ci_high": [0.0]})
            g = pd.concat([origin, g[["beta", "delta", "ci_low", "ci_high"]]]).sort_values("beta")  # β 0 = clean
            ax.plot(g["beta"], g["delta"], marker="o", label=direction)
            ax.fill_between(g["beta"], g["ci_low"], g["ci_high"], alpha=0.15)
        inst = effects[(effects["condition"] == "instructed") & (effects["metric"] == metric)]
        if len(inst):
            r = inst.iloc[0]
            ax.axhline(r["delta"], color="k", ls="--", lw=1, label="instructed")
            ax.axhspan(r["ci_low"], r["ci_high"], color="k", alpha=0.08)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xlabel("β")
        ax.set_title(label, fontsize=9)
    axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def tradeoff_figure(effects: pd.DataFrame, capability: pd.DataFrame, max_ppl_ratio: float = 1.5,
                    max_accuracy_drop: float = 0.10):
    """Δ valence against perplexity ratio and against readout-accuracy change, per (direction, β)."""
    gain = effects[effects["metric"] == "vader_compound"][["direction", "beta", "kind", "delta", "ci_low",
                                                          "ci_high"]]
    cap = capability[capability["kind"] != "clean"]
    merged = cap.merge(gain, on=["direction", "beta", "kind"], how="inner")
    fig, axes = subplots(1, 2, figsize=(8.5, 3.4), sharey=True)
    for ax, col, label, limit in ((axes[0], "ppl_ratio", "perplexity ratio on neutral text", max_ppl_ratio),
                                  (axes[1], "accuracy_delta", "readout accuracy change", -max_accuracy_drop)):
        for direction, g in merged.groupby("direction", sort=False):
            g = g.sort_values("beta")
            ax.errorbar(g[col], g["delta"], yerr=[g["delta"] - g["ci_low"], g["ci_high"] - g["delta"]],
                        marker="o", capsize=2, label=direction)
            for r in g.itertuples():
                ax.annotate(f"{r.beta:g}", (getattr(r, col), r.delta), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
        inst = gain[gain["kind"] == "instructed"]
        if len(inst):
            r = inst.iloc[0]
            x0 = 1.0 if col == "ppl_ratio" else 0.0
            ax.errorbar([x0], [r["delta"]], yerr=[[r["delta"] - r["ci_low"]], [r["ci_high"] - r["delta"]]],
                        marker="*", ms=10, color="k", capsize=2, label="instructed")
        ax.axvline(limit, color="red", ls="--", lw=0.8)
        if col == "ppl_ratio" and len(merged) and merged[col].max() > 10:
            ax.set_xscale("log")  # a broken model's perplexity runs to orders of magnitude
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xlabel(label)
    axes[0].set_ylabel("Δ VADER valence vs clean")
    axes[1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def capability_figure(capability: pd.DataFrame):
    """Perplexity ratio, readout accuracy (with Wilson interval) and degenerate rate versus β."""
    clean = capability[capability["kind"] == "clean"]
    cap = capability[capability["kind"] != "clean"]
    fig, axes = subplots(1, 3, figsize=(10, 3.1))
    for direction, g in cap.groupby("direction", sort=False):
        g = pd.concat([clean.assign(direction=direction), g]).sort_values("beta")
        axes[0].plot(g["beta"], g["ppl_ratio"], marker="o", label=direction)
        axes[1].plot(g["beta"], g["readout_accuracy"], marker="o")
        axes[1].fill_between(g["beta"], g["accuracy_low"], g["accuracy_high"], alpha=0.12)
        axes[2].plot(g["beta"], g["degenerate_rate"], marker="o")
    for ax, title in zip(axes, ("perplexity ratio (neutral text)", "readout accuracy (unrelated items)",
                                "degenerate-reply rate"), strict=True):
        ax.set_xlabel("β")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
