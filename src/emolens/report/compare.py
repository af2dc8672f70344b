"""Cross-model comparison (``emolens compare``): the paper's figures on relative depth, from saved run tables.

One row per model (ordered by layer count, as in Tak et al.'s figures), one column per analysis:
probe accuracy, activation patching, ablation and steering, each against relative depth
``(layer + 1) / n_layers`` so models of different depths line up. A panel whose table is absent
says so. Also writes ``peaks.csv`` (best probe layer, patching peak, ablation dip per model and
site, with relative depth) and ``compare.html`` (self-contained).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from emolens.errors import EmolensError
from emolens.paths import atomic_write_bytes
from emolens.report.findings import findings, promotion_success
from emolens.report.page import table_html
from emolens.report.plotting import SITE_COLORS, fig_png, main_position, numeric_positions, subplots
from emolens.report.probe_figures import probe_curves
from emolens.report.runs import model_runs, relative_depth
from emolens.report.similarity_section import similarity_html

COLUMNS = ("probe", "patch", "ablate", "steer")
TITLES = {"probe": "emotion probe accuracy", "patch": "activation patching", "ablate": "ablation",
          "steer": "steering success"}


def curve_panel(ax, table, n_layers, pick_metric, group_col="site", fixed=None):
    """Mean value per (group, window centre) against relative depth; returns the metric drawn."""

    t = numeric_positions(table)
    if "kind" in t:
        t = t[t["kind"] != "clean"]
    if "head" in t and t["head"].isna().any():
        t = t[t["head"].isna()]
    metrics = list(dict.fromkeys(t.metric))
    metric = next((m for p in pick_metric for m in metrics if p in str(m)), metrics[0])
    t = t[t.metric == metric]
    pos = main_position(t)
    if pos is not None:
        t = t[t.position == pos]
    for col, value in (fixed or {}).items():
        if col in t and value in set(t[col]):
            t = t[t[col] == value]
    if "window_span" in t and t.window_span.nunique() > 1:
        t = t[t.window_span == t.window_span.max()]
    x_col = "window_center" if "window_center" in t else "layer"
    for name, g in t.groupby(group_col, sort=False):
        g = g.groupby(x_col, as_index=False)["value"].mean().sort_values(x_col)
        ax.plot((np.asarray(g[x_col], dtype=float) + 1) / n_layers, g["value"], marker="o", ms=3, label=str(name),
                color=SITE_COLORS.get(str(name)))
    ax.set_xlim(0, 1.02)
    return metric


def compare_runs(run_dirs: list[Path], out: Path, similarity: Callable[[list], Sequence] | None = None
                 ) -> dict[str, Path]:
    """Draw the cross-model figure and peak table for every model in ``run_dirs`` into ``out``.

    ``similarity(models)``, when given, measures every pair of the models (see
    :func:`emolens.study.similarity.pair_similarity`); the page then states CKA, RSA and transfer.
    """

    models = []
    for run_dir in run_dirs:
        models += model_runs(run_dir)
    if not models:
        raise EmolensError("the runs hold no models", "pass folders made by emolens run")
    missing_depth = [m.spec for m in models if not m.n_layers]
    if missing_depth:
        raise EmolensError(f"no finished readout for {missing_depth}, so their depth is unknown",
                           "finish those runs (emolens run resumes them) before comparing")
    models.sort(key=lambda m: (m.n_layers, m.spec))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = subplots(len(models), len(COLUMNS), figsize=(4.2 * len(COLUMNS), 2.8 * len(models)),
                             squeeze=False)
    for r, mr in enumerate(models):
        for c, name in enumerate(COLUMNS):
            ax = axes[r][c]
            table = mr.table(name)
            drawn = None
            if table is not None and len(table):
                if name == "probe":
                    drawn = "accuracy" if probe_curves(ax, table, mr.n_layers, legend=r == 0, depth=True) else None
                elif name == "patch":
                    drawn = curve_panel(ax, table, mr.n_layers, ("transfer", "success"))
                elif name == "ablate":
                    drawn = curve_panel(ax, table, mr.n_layers, ("agreement", "accuracy"), fixed={"kind": "zero"})
                else:
                    promo = promotion_success(table)
                    if len(promo):
                        promo = promo.assign(metric="promotion success", position=-1)
                        drawn = curve_panel(ax, promo, mr.n_layers, ("success",), group_col="beta")
            if drawn is None:
                ok, why = mr.stage_status(name)
                ax.text(0.5, 0.5, "not available" + ("" if ok else f"\n({why[:60]})"), ha="center", va="center",
                        fontsize=7, transform=ax.transAxes, wrap=True)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.set_ylabel(drawn.replace("_", " "), fontsize=8)
                if r == len(models) - 1:
                    ax.set_xlabel("relative depth (layer / n_layers)")
                if name != "probe" and r == 0:
                    ax.legend(fontsize=6)
            if r == 0:
                ax.set_title(TITLES[name], fontsize=10)
            if c == 0:
                label = mr.label if len(run_dirs) == 1 else f"{mr.label}\n{mr.run_dir.name}"
                ax.annotate(label, xy=(-0.32, 0.5), xycoords="axes fraction", rotation=90, ha="center",
                            va="center", fontsize=8)
    fig.tight_layout()
    png = fig_png(fig)
    atomic_write_bytes(out / "compare.png", png)
    rows = []
    for mr in models:
        f = findings(mr)
        base = {"model": mr.spec, "run": str(mr.run_dir), "n_layers": mr.n_layers}
        if "probe_best" in f:
            b = f["probe_best"]
            rows.append({**base, "analysis": "probe_best", "site": b["site"], "layer": b["layer"],
                         "relative_depth": relative_depth(b["layer"], mr.n_layers), "value": b["value"]})
        for key in ("steer_peak", "steer_alignment"):  # promotion success; best theory alignment
            if key in f:
                p = f[key]
                rows.append({**base, "analysis": key, "site": "resid", "layer": p["layer"],
                             "relative_depth": relative_depth(p["layer"], mr.n_layers), "value": p["value"]})
        for key in ("patch_peak", "ablate_dip"):
            for site, p in f.get(key, {}).get("sites", {}).items():
                rows.append({**base, "analysis": key, "site": site, "layer": p["layer"],
                             "relative_depth": relative_depth(p["layer"], mr.n_layers), "value": p["value"]})
    peaks = pd.DataFrame(rows, columns=["model", "run", "n_layers", "analysis", "site", "layer", "relative_depth",
                                        "value"])
    atomic_write_bytes(out / "peaks.csv", peaks.to_csv(index=False).encode())
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>emolens compare</title></head><body "
            "style='font-family:sans-serif;max-width:1400px;margin:auto'><h1>Cross-model comparison</h1>"
            f"<p>{len(models)} model(s) from {len(run_dirs)} run(s); layers 1-indexed; relative depth = "
            "(layer + 1) / n_layers.</p>"
            f"<img style='max-width:100%' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            f"<h2>Peaks</h2>{table_html(peaks, 500)}"
            + (similarity_html(similarity(models), out) if similarity is not None else "")
            + f"<p>Runs: {html.escape(', '.join(map(str, run_dirs)))}</p></body></html>")
    atomic_write_bytes(out / "compare.html", page.encode())
    return {"figure": out / "compare.png", "peaks": out / "peaks.csv", "html": out / "compare.html"}


__all__ = ["COLUMNS", "compare_runs", "curve_panel"]
