"""``report.html`` for a run: one self-contained page drawn only from the run's saved tables.

Figures are PNGs embedded as base64 (no CDN, no script, opens offline). Each section reads the
tables its stage saved; a section whose tables are absent says why (the stage was not requested,
did not finish, or its analysis module is not available). Layers are 0-indexed in the tables and
1-indexed in every figure and sentence here; *relative depth* is ``(layer + 1) / n_layers``, so
the last layer is 1.0 (the paper's convention, e.g. layer 10 of 16 = 0.63).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from emolens.paths import atomic_write_bytes  # noqa: E402

SITE_COLORS = {"attn": "#d62728", "mlp": "#1f77b4", "resid": "#2ca02c", "attn_post": "#ff9896",
               "mlp_post": "#aec7e8", "heads": "#9467bd", "embed": "#7f7f7f", "final": "#17becf"}
#: Table file of each stage (relative to the stage folder).
TABLES = {"readout": "readout.parquet", "probe": "probes.parquet", "ablate": "ablation.parquet",
          "patch": "patching.parquet", "knockout": "knockout.parquet", "steer": "steering.parquet",
          "alignment": "alignment.parquet", "generations": "generations.parquet",
          "robustness": "robustness.parquet"}
_TABLE_STAGE = {"alignment": "steer", "generations": "steer"}


# ----------------------------------------------------------------------------------------------
# reading a run


def relative_depth(layer: float, n_layers: int) -> float:
    return (float(layer) + 1.0) / float(n_layers)


class ModelRun:
    """The saved results of one model in a run folder."""

    def __init__(self, run_dir: Path, slug: str, meta: dict):
        self.run_dir = Path(run_dir)
        self.slug = slug
        self.meta = meta
        self.spec = meta.get("models", {}).get(slug, {}).get("spec", slug)

    def stage_record(self, stage: str) -> dict | None:
        path = self.run_dir / self.slug / stage / "stage.json"
        return json.loads(path.read_text()) if path.exists() else None

    def stage_status(self, stage: str) -> tuple[bool, str]:
        """(finished, why not) for a stage of this model."""
        rec = self.stage_record(stage)
        if rec and rec.get("status") in ("done", "reused"):
            return True, ""
        info = self.meta.get("stages", {}).get(self.slug, {}).get(stage)
        if stage not in self.meta.get("config", {}).get("stages", []):
            return False, f"the {stage} stage was not requested in this study's config"
        if info is None:
            return False, f"the {stage} stage has not run yet"
        return False, f"the {stage} stage is {info['status']}" + (f": {info['note']}" if info.get("note") else "")

    def table(self, name: str) -> pd.DataFrame | None:
        stage = _TABLE_STAGE.get(name, name)
        ok, _ = self.stage_status(stage)
        path = self.run_dir / self.slug / stage / TABLES[name]
        if not ok or not path.exists():
            return None
        return pd.read_parquet(path)

    def json(self, stage: str, name: str) -> dict | None:
        ok, _ = self.stage_status(stage)
        path = self.run_dir / self.slug / stage / name
        return json.loads(path.read_text()) if ok and path.exists() else None

    @property
    def n_layers(self) -> int | None:
        n = self.meta.get("models", {}).get(self.slug, {}).get("n_layers")
        if n:
            return int(n)
        metrics = self.json("readout", "metrics.json")
        return int(metrics["n_layers"]) if metrics and "n_layers" in metrics else None

    @property
    def label(self) -> str:
        n = self.n_layers
        return f"{self.spec} ({n} layers)" if n else self.spec


def model_runs(run_dir: str | Path) -> list[ModelRun]:
    from emolens.study.pipeline import load_run

    meta = load_run(run_dir)
    return [ModelRun(Path(run_dir), slug, meta) for slug in meta.get("models", {})]


# ----------------------------------------------------------------------------------------------
# figures


def fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def numeric_positions(frame: pd.DataFrame) -> pd.DataFrame:
    """Positions as numbers (causal tables store them as text; clean rows have none)."""
    if "position" in frame and not pd.api.types.is_numeric_dtype(frame["position"]):
        frame = frame.assign(position=pd.to_numeric(frame["position"], errors="coerce"))
    return frame


def main_position(frame: pd.DataFrame) -> int | None:
    """The position figures show: -1 (the answer cue) when present."""
    if "position" not in frame:
        return None
    values = pd.to_numeric(frame["position"], errors="coerce").dropna()
    if values.empty:
        return None
    positions = sorted(set(int(p) for p in values))
    return -1 if -1 in positions else positions[-1]


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
        x = _x(g.layer, n_layers, depth)
        color = SITE_COLORS.get(site)
        ax.plot(x, g.value, marker="o", ms=3, label=site, color=color)
        ax.fill_between(x, g.ci_low, g.ci_high, alpha=0.2, color=color)
        c = ctrl[(ctrl.site == site) & (ctrl.position == pos)].sort_values("layer")
        if len(c):
            ax.plot(_x(c.layer, n_layers, depth), c.value, ls="--", lw=1, color=color, alpha=0.7)
    ax.axhline(float(t.chance.iloc[0]), ls=":", color="grey", lw=1, label="chance (majority)")
    ax.set_ylabel(f"probe {metric.replace('_', ' ')}")
    ax.set_xlabel("relative depth" if depth else "layer (1-indexed)")
    ax.set_ylim(0, 1.02)
    if legend:
        ax.legend(fontsize=7, title="dashed: shuffled labels" if len(ctrl) else None, title_fontsize=7)
    return True


def _x(layers, n_layers: int | None, depth: bool):
    layers = np.asarray(layers, dtype=float)
    return (layers + 1) / n_layers if depth and n_layers else layers + 1


def probe_heatmaps(probes: pd.DataFrame, metric: str = "accuracy") -> bytes | None:
    t = probes[(probes.task == "emotion") & (probes.metric == metric)]
    if t.empty or t.position.nunique() < 2:
        return None
    sites = list(dict.fromkeys(t.site))
    fig, axes = plt.subplots(1, len(sites), figsize=(4.2 * len(sites), 3.2), squeeze=False)
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
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(piv) + 1.5))
    im = ax.imshow(piv.to_numpy(), aspect="auto", cmap="viridis", vmin=min(0, float(np.nanmin(piv.to_numpy()))),
                   vmax=max(0.1, float(np.nanmax(piv.to_numpy()))))
    ax.set_yticks(range(len(piv.index)), piv.index, fontsize=7)
    ax.set_xticks(range(len(piv.columns)), [str(c + 1) for c in piv.columns], fontsize=6)
    ax.set_xlabel("layer (1-indexed)")
    ax.set_title(f"appraisal probes: held-out R² ({site}, position {pos})")
    fig.colorbar(im, ax=ax, label="R²")
    return fig_png(fig)


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
        fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * piv.shape[1] + 2), 0.45 * piv.shape[0] + 1.4))
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


def confusion_figure(frame: pd.DataFrame, title: str) -> bytes | None:
    from emolens.labels import EMOTIONS
    from emolens.metrics import confusion

    labels = [c.removeprefix("logp_") for c in frame.columns if c.startswith("logp_")] or list(EMOTIONS)
    known = frame["gold"].isin(labels)
    if not known.any():
        return None
    gold = frame.loc[known, "gold"].map(labels.index).to_numpy()
    pred = frame.loc[known, "pred"].map(labels.index).to_numpy()
    matrix = confusion(gold, pred, len(labels))
    rows = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(norm, cmap="magma", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] < 0.6 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="fraction of gold row")
    return fig_png(fig)


def robustness_figure(table: pd.DataFrame) -> bytes:
    t = _readout_rows(table)
    t = t[t.metric == "accuracy"]
    fig, ax = plt.subplots(figsize=(7, 3))
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


def _readout_rows(table: pd.DataFrame) -> pd.DataFrame:
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
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False, sharey=True)
    variants = list(dict.fromkeys(t.variant))
    colors = plt.get_cmap("tab10")
    for ax, (site, span) in zip(axes[0], panels, strict=True):
        g = t[(t.site == site) & (t.window_span == span)]
        for i, variant in enumerate(variants):
            line = g[g.variant == variant].sort_values("layer")
            if line.empty:
                continue
            x = _x(line.layer, n_layers, True)
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


def robustness_findings(table: pd.DataFrame, n_layers: int | None = None) -> dict[str, dict[str, Any]]:
    """Per prompt variant: readout accuracy, where the probe peaks (best site and layer), where zero
    ablation dips and patching peaks (first site, window centre), from a robustness table."""
    out: dict[str, dict[str, Any]] = {}
    for variant, g in table.groupby("variant", sort=False):
        f: dict[str, Any] = {}
        acc = _readout_rows(g)
        acc = acc[acc.metric == "accuracy"]
        if len(acc):
            f["accuracy"] = float(acc.value.iloc[0])
        for analysis, (metric, pick) in ROBUSTNESS_METRICS.items():
            if "analysis" not in g:
                break
            t = g[(g.analysis == analysis) & (g.metric == metric)].dropna(subset=["value", "layer"])
            if analysis != "probe" and len(t):  # the first site and span: attn in the presets
                t = t[(t.site == t.site.iloc[0]) & (t.window_span == t.window_span.iloc[0])]
            if t.empty:
                continue
            r = t.loc[t.value.idxmax() if pick == "max" else t.value.idxmin()]
            f[analysis] = {"site": r.site, "layer": int(r.layer), "value": float(r.value),
                           "depth": relative_depth(r.layer, n_layers) if n_layers else None}
        out[str(variant)] = f
    return out


def robustness_text(found: dict[str, dict[str, Any]]) -> str:
    """One paragraph: accuracy range over the variants, then per analysis where each variant peaks or dips."""
    if not found:
        return ""
    parts = []
    acc = {v: f["accuracy"] for v, f in found.items() if "accuracy" in f}
    if acc:
        lo, hi = min(acc, key=acc.get), max(acc, key=acc.get)
        parts.append(f"Readout accuracy ranges from {acc[lo]:.2f} ({lo}) to {acc[hi]:.2f} ({hi}) over the "
                     f"{len(acc)} prompt variants.")
    for analysis, (metric, _) in ROBUSTNESS_METRICS.items():
        got = {v: f[analysis] for v, f in found.items() if analysis in f}
        if not got:
            continue
        depths = [x["depth"] for x in got.values() if x["depth"] is not None]
        sites = sorted({x["site"] for x in got.values()})
        verb = {"probe": "The emotion probe peaks",
                "ablate": f"Zero ablation of {', '.join(sites)} hurts most ({metric} dips)",
                "patch": f"Patching {', '.join(sites)} transfers the emotion most"}[analysis]
        if depths and min(depths) == max(depths):
            which = "every variant" if len(got) == len(found) else f"the {len(got)} variants where it is defined"
            parts.append(f"{verb} at relative depth {depths[0]:.2f} under {which}.")
            continue
        spread = f" between relative depth {min(depths):.2f} and {max(depths):.2f}" if depths else ""
        where = "; ".join(f"{v} {_depth_text(x, analysis == 'probe')}" for v, x in got.items())
        parts.append(f"{verb}{spread}: {where}.")
    return " ".join(parts)


def _depth_text(x: dict[str, Any], site: bool) -> str:
    at = f"{x['depth']:.2f}" if x.get("depth") is not None else f"layer {x['layer'] + 1}"
    return f"{at} ({x['site'] + ' ' if site else ''}{x['value']:.2f})"


def promotion_success(table: pd.DataFrame) -> pd.DataFrame:
    """Emotion promotion rows of a steering table: success on the promoted label, by window and beta.

    Columns: emotion, method, window_center, beta, value, ci_low, ci_high, random (the mean success
    that the norm-matched random directions of the same window and beta reach on that label).
    """
    from emolens.labels import EMOTIONS

    need = {"direction", "kind", "metric", "label", "window", "beta", "value"}
    if table is None or not need <= set(table.columns):
        return pd.DataFrame()
    t = table[(table.metric == "success") & (table.beta > 0)]
    emo = t[(t.kind == "real") & t.direction.isin([f"{e}+" for e in EMOTIONS])]
    emo = emo[emo.label == emo.direction.str[:-1]]
    rnd = t[t.kind == "random"].groupby(["method", "window", "beta", "label"], as_index=False)["value"].mean()
    out = emo.merge(rnd.rename(columns={"value": "random"}), on=["method", "window", "beta", "label"], how="left")
    return out.rename(columns={"label": "emotion", "window": "window_center"})[
        ["emotion", "method", "window_center", "beta", "value", "ci_low", "ci_high", "random"]]


def steering_figures(table: pd.DataFrame, n_layers: int | None = None) -> list[tuple[str, bytes]]:
    """Emotion promotion success by window (one panel per beta) and the appraisal-surgery outcome."""
    if table is None or table.empty:
        return []
    out = []
    promo = promotion_success(table)
    if len(promo):
        betas = sorted(promo.beta.unique())
        fig, axes = plt.subplots(1, len(betas), figsize=(4.3 * len(betas), 3.3), squeeze=False, sharey=True)
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
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(piv) + 1.6))
        im = ax.imshow(piv.to_numpy(dtype=float), aspect="auto", cmap="magma", vmin=0, vmax=1)
        ax.set_yticks(range(len(piv.index)), piv.index, fontsize=7)
        ax.set_xticks(range(len(piv.columns)), piv.columns, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"predicted-label distribution under steering (window centre {mid + 1}, "
                     f"β = {table.beta.max():g})", fontsize=9)
        fig.colorbar(im, ax=ax, label="fraction of items")
        out.append(("appraisal surgery", fig_png(fig)))
    return out


# ----------------------------------------------------------------------------------------------
# where is the emotion computed?


def _first_at_least(g: pd.DataFrame, frac: float) -> int | None:
    g = g.sort_values("layer")
    top = g.value.max()
    hit = g[g.value >= frac * top]
    return int(hit.layer.iloc[0]) if len(hit) else None


def findings(mr: ModelRun) -> dict[str, Any]:
    """Numbers behind the summary sentence, from the saved tables only."""
    n = mr.n_layers
    out: dict[str, Any] = {"model": mr.spec, "n_layers": n}
    readout = mr.json("readout", "metrics.json")
    if readout:
        out["accuracy"] = readout.get("raw", {}).get("accuracy")
    probes = mr.table("probe")
    if probes is not None:
        t = probes[(probes.task == "emotion") & (probes.metric == "accuracy")]
        pos = main_position(t)
        t = t[t.position == pos].dropna(subset=["value"])
        if len(t):
            best = t.loc[t.value.idxmax()]
            out["probe_best"] = {"site": best.site, "layer": int(best.layer), "value": float(best.value),
                                 "ci": [float(best.ci_low), float(best.ci_high)], "chance": float(best.chance)}
            resid = t[t.site == "resid"] if "resid" in set(t.site) else t[t.site == best.site]
            first = _first_at_least(resid, 0.9)
            if first is not None:
                out["probe_rise"] = {"site": resid.site.iloc[0], "layer": first}
    for key, name, pick in (("patch_peak", "patch", "max"), ("ablate_dip", "ablate", "min")):
        table = mr.table(name)
        if table is None or table.empty:
            continue
        t = numeric_positions(table)
        if "kind" in t:
            t = t[t["kind"] != "clean"]
        if "head" in t:
            t = t[t["head"].isna()] if t["head"].isna().any() else t
        metrics = list(dict.fromkeys(t.metric))
        prefer = ("transfer", "success") if pick == "max" else ("agreement", "accuracy")
        metric = next((m for p in prefer for m in metrics if p in str(m)), metrics[0])
        t = t[t.metric == metric]
        pos = main_position(t)
        if pos is not None:
            t = t[t.position == pos]
        per_site = {}
        for site, g in t.groupby("site"):
            g = g.groupby("window_center", as_index=False)["value"].mean() if "kind" not in g else (
                g[g["kind"] == g["kind"].iloc[0]].groupby("window_center", as_index=False)["value"].mean())
            g = g.dropna(subset=["value"])
            if g.empty:  # e.g. patching transfer is undefined when no pair's clean readouts differ
                continue
            row = g.loc[g.value.idxmax() if pick == "max" else g.value.idxmin()]
            per_site[site] = {"layer": int(row.window_center), "value": float(row.value)}
        out[key] = {"metric": metric, "sites": per_site}
    promo = promotion_success(mr.table("steer")) if mr.table("steer") is not None else pd.DataFrame()
    top = pd.Series(dtype=float)
    if len(promo):
        top = promo[promo.beta == promo.beta.max()].groupby("window_center")["value"].mean().dropna()
    if len(top):
        out["steer_peak"] = {"layer": int(top.idxmax()), "value": float(top.max()), "beta": float(promo.beta.max())}
    align = mr.table("alignment")
    if align is not None and "metric" in align:
        best = align[align.metric == "best_alignment"].dropna(subset=["value"])
        if len(best):
            b = best.loc[best.value.idxmax()]
            out["steer_alignment"] = {"layer": int(b.window), "value": float(b.value), "p": float(b.p_value),
                                      "n_settings": int(b.n_settings), "fit": str(b.get("fit", "")),
                                      "beta": float(b.beta)}
    return out


def summary_text(f: dict[str, Any]) -> str:
    n = f.get("n_layers")
    parts = []

    def at(layer: int) -> str:
        return f"layer {layer + 1}" + (f" ({relative_depth(layer, n):.0%} depth)" if n else "")

    if f.get("accuracy") is not None:
        parts.append(f"{f['model']} reads the emotion label correctly for {f['accuracy']:.1%} of the items.")
    if "probe_best" in f:
        b = f["probe_best"]
        parts.append(f"A linear probe decodes the emotion best from {b['site']} at {at(b['layer'])}: "
                     f"{b['value']:.2f} [{b['ci'][0]:.2f}, {b['ci'][1]:.2f}] against chance {b['chance']:.2f}.")
    if "probe_rise" in f:
        r = f["probe_rise"]
        parts.append(f"The {r['site']} probe reaches 90% of its best accuracy at {at(r['layer'])}.")
    if f.get("patch_peak", {}).get("sites"):
        sites = f["patch_peak"]["sites"]
        site = "attn" if "attn" in sites else max(sites, key=lambda s: sites[s]["value"])
        p = sites[site]
        parts.append(f"Patching {site} moves the source's emotion most with the window centred on {at(p['layer'])} "
                     f"({f['patch_peak']['metric']} {p['value']:.2f}).")
    if f.get("ablate_dip", {}).get("sites"):
        sites = f["ablate_dip"]["sites"]
        site = "attn" if "attn" in sites else min(sites, key=lambda s: sites[s]["value"])
        d = sites[site]
        parts.append(f"Ablating {site} hurts most with the window centred on {at(d['layer'])} "
                     f"({f['ablate_dip']['metric']} {d['value']:.2f}).")
    if "steer_peak" in f:
        p = f["steer_peak"]
        parts.append(f"Adding emotion directions (β={p['beta']:g}) promotes the emotion most in the window centred "
                     f"on {at(p['layer'])} (mean success {p['value']:.2f}).")
    if "steer_alignment" in f:
        a = f["steer_alignment"]
        parts.append(f"Steering appraisal directions agrees best with the human ratings in the window centred on "
                     f"{at(a['layer'])} (theory alignment {a['value']:.2f} at β={a['beta']:g}, p = {a['p']:.2g} for "
                     f"the best of {a['n_settings']} settings, directions fit = {a['fit']}).")
    if len(parts) <= 1:
        parts.append("No probe or causal tables yet, so nothing can be said about where the emotion is computed.")
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------
# HTML


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.4em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#f4f4f4}img{max-width:100%;margin:.4em 0}pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.8em}
.absent{color:#8a5a00;background:#fff7e6;padding:.3em .6em;border-left:3px solid #f0ad4e}
.summary{background:#eef6ee;padding:.6em 1em;border-left:4px solid #2ca02c}
"""


def _table_html(frame: pd.DataFrame, max_rows: int = 40) -> str:
    if len(frame) > max_rows:
        frame = frame.head(max_rows)
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, escape=True)


def _absent(text: str) -> str:
    return f'<p class="absent">{html.escape(text)}</p>'


def _section_readout(mr: ModelRun) -> str:
    ok, why = mr.stage_status("readout")
    if not ok:
        return _absent(f"No readout: {why}.")
    metrics = mr.json("readout", "metrics.json") or {}
    frame = mr.table("readout")
    raw = metrics.get("raw", {})
    rows = [("items", raw.get("n")), ("accuracy", raw.get("accuracy")),
            ("95% CI", f"[{raw.get('accuracy_ci_low', np.nan):.3f}, {raw.get('accuracy_ci_high', np.nan):.3f}]"),
            ("balanced accuracy", raw.get("balanced_accuracy")), ("macro-F1", raw.get("macro_f1")),
            ("majority baseline", raw.get("majority_baseline")), ("label scoring", metrics.get("label_scoring"))]
    if "calibrated" in metrics:
        rows.append(("calibrated accuracy", metrics["calibrated"].get("accuracy")))
    body = _table_html(pd.DataFrame(rows, columns=["metric", "value"]))
    if frame is not None:
        png = confusion_figure(frame, f"{mr.spec}: confusion (n={len(frame)})")
        if png:
            body += _img(png, "confusion matrix")
    return body


def _section_probe(mr: ModelRun) -> str:
    ok, why = mr.stage_status("probe")
    probes = mr.table("probe") if ok else None
    if probes is None:
        return _absent(f"No probe tables: {why or 'probes.parquet is missing'}.")
    body = ""
    tasks = [t for t in ("emotion", "emotion/mlp") if t in set(probes.task)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    probe_curves(axes[0], probes, mr.n_layers, "accuracy", tasks[0] if tasks else "emotion")
    axes[0].set_title("emotion probe: held-out accuracy", fontsize=9)
    probe_curves(axes[1], probes, mr.n_layers, "balanced_accuracy", tasks[0] if tasks else "emotion", legend=False)
    bal = probes[(probes.task == "emotion") & (probes.metric == "balanced_accuracy")]
    if len(bal):
        axes[1].axhline(float(bal.chance.iloc[0]), ls=":", color="grey")
    axes[1].set_title("balanced accuracy (chance 1/K)", fontsize=9)
    body += _img(fig_png(fig), "probe curves")
    if "emotion/mlp" in tasks:
        fig, ax = plt.subplots(figsize=(6, 3.4))
        probe_curves(ax, probes, mr.n_layers, "accuracy", "emotion/mlp")
        ax.set_title("MLP probe (non-linear control)", fontsize=9)
        body += _img(fig_png(fig), "mlp probe curves")
    heat = probe_heatmaps(probes)
    if heat:
        body += "<h3>Position x layer</h3>" + _img(heat, "probe heatmaps")
    app = appraisal_heatmap(probes)
    if app:
        body += "<h3>Appraisal probes</h3>" + _img(app, "appraisal probes")
    human = probes[probes.task == "human_baseline"]
    if len(human):
        body += "<h3>Human baseline (appraisal ratings → emotion)</h3>" + _table_html(
            human[["metric", "value", "ci_low", "ci_high", "n", "chance"]])
    return body


_MAIN_METRICS = {"ablate": ("agreement", "delta_logp_gold"), "patch": ("transfer", "normalised_logit_diff"),
                 "knockout": ("agreement", "delta_logp_gold")}


def _section_effects(mr: ModelRun, stage: str, title: str) -> str:
    ok, why = mr.stage_status(stage)
    table = mr.table(stage) if ok else None
    if table is None:
        return _absent(f"No {title.lower()} tables: {why or 'the table is missing'}.")
    figs = effect_heatmaps(table, title, mr.n_layers, _MAIN_METRICS.get(stage))
    return "".join(_img(png, name) for name, png in figs) or _absent("The table has no rows to draw.")


def _section_steer(mr: ModelRun) -> str:
    ok, why = mr.stage_status("steer")
    if not ok:
        return _absent(f"No steering tables: {why}.")
    body = ""
    table = mr.table("steer")
    for name, png in steering_figures(table, mr.n_layers):
        body += _img(png, f"steering {name}")
    if table is not None and "fit" in table:
        body += f"<p>{html.escape(fit_text(table, mr.stage_record('steer')))}</p>"
    align = mr.table("alignment")
    if align is not None and len(align):
        best = align[align.metric == "best_alignment"]
        text = best_alignment_text(align)
        body += "<h3>Theory alignment</h3>" + (f'<p class="summary">{html.escape(text)}</p>' if text else "")
        if len(best):
            body += _table_html(best[[c for c in ALIGN_COLUMNS + ("n_settings",) if c in best]])
        per = align[align.metric != "best_alignment"]
        body += _table_html(per[[c for c in ALIGN_COLUMNS if c in per]])
    else:
        body += _absent("No theory-alignment table.")
    gens = mr.table("generations")
    if gens is not None and len(gens):
        body += "<h3>Sample generations</h3>" + generation_text(gens, mr.stage_record("steer"))
        body += _table_html(generation_rows(gens), 40)
    else:
        body += _absent("No sample generations were saved.")
    return body or _absent("The steering stage saved no tables.")


ALIGN_COLUMNS: tuple[str, ...] = ("metric", "method", "fit", "window", "layers", "beta", "position", "value", "p_value",
                                  "n_random")
_FIT_WORDS = {"heldout": "fitted on other items than those steered (held-out fit)",
              "all": "fitted on the same items that are steered",
              "overlap": "fitted on items that include the steered ones",
              "given": "given (fitted elsewhere)"}


def fit_text(table: pd.DataFrame, record: dict | None = None) -> str:
    """Which items fitted the steering directions (the table's ``fit`` column), with the split sizes."""
    modes = list(dict.fromkeys(table["fit"].astype(str)))
    summary = (record or {}).get("summary", {})
    sizes = ""
    if summary.get("n_fit") is not None and summary.get("n_items") is not None:
        sizes = f" ({summary['n_fit']} fit items, {summary['n_items']} steered)"
    controls = f"; {summary['n_random']} norm-matched random directions per setting" if "n_random" in summary else ""
    return ("Directions " + " / ".join(f"fit = {m}: {_FIT_WORDS.get(m, m)}" for m in modes) + sizes + controls
            + ".")


def best_alignment_text(align: pd.DataFrame) -> str:
    """The headline: the best theory alignment over the searched windows and betas, with the p-value
    corrected for that search (max statistic over the random directions)."""
    best = align[align.metric == "best_alignment"].dropna(subset=["value"])
    out = []
    for _, b in best.iterrows():
        fit = b.get("fit", "?")
        out.append(f"Best theory alignment ({b.method}, fit = {fit}, position {b.position}): {b.value:.2f} in "
                   f"the window centred on layer {int(b.window) + 1} (layers {b.layers}, 0-indexed), β = {b.beta:g}; "
                   f"p = {b.p_value:.2g} for the best of {int(b.n_settings)} settings against {int(b.n_random)} random "
                   f"directions (the smallest p they allow is {1 / (1 + int(b.n_random)):.2g}).")
    return " ".join(out)


def generation_rows(gens: pd.DataFrame) -> pd.DataFrame:
    """The generations table as the report shows it: fluency flags as text, degenerate rows marked."""
    g = gens.copy()
    if "flags" in g:
        g["flags"] = g["flags"].map(lambda f: ", ".join(list(f)) if f is not None and len(f) else "")
    cols = ["id", "direction", "kind", "window", "beta", "position", "continuation", "emotion", "mean_logp", "flags",
            "degenerate"]
    return g[[c for c in cols if c in g]]


def generation_text(gens: pd.DataFrame, record: dict | None = None) -> str:
    summary = (record or {}).get("summary", {})
    steered = gens[gens.kind != "clean"] if "kind" in gens else gens
    where = ""
    if summary.get("generation_window_beta"):
        window, beta = summary["generation_window_beta"]
        at = {"generated": "the last prompt token and every generated token", "last": "the last prompt token",
              "prompt": "every prompt token"}.get(summary.get("generation_position"), "")
        where = f" steering {at or 'the prompt'} in the window centred on layer {int(window) + 1} at β = {beta:g}"
    flagged = int(steered.degenerate.sum()) if "degenerate" in steered else 0
    return (f"<p>{len(steered)} steered continuations{html.escape(where)}; {flagged} flagged by the fluency guard "
            f"(treat their emotion as meaningless).</p>")


def _section_robustness(mr: ModelRun) -> str:
    ok, why = mr.stage_status("robustness")
    table = mr.table("robustness") if ok else None
    if table is None:
        return _absent(f"No robustness table: {why}.")
    readout = _readout_rows(table)
    body = _img(robustness_figure(table), "robustness")
    text = robustness_text(robustness_findings(table, mr.n_layers))
    if text:
        body += f'<p class="summary">{html.escape(text)}</p>'
    for analysis in ROBUSTNESS_METRICS:
        png = robustness_analysis_figure(table, analysis, mr.n_layers) if "analysis" in table else None
        if png:
            body += _img(png, f"robustness {analysis}")
    cols = [c for c in ("variant", "template", "shots", "metric", "value", "ci_low", "ci_high", "n", "chance")
            if c in readout]
    return body + _table_html(readout[readout.metric == "accuracy"][cols])


def _stage_table(meta: dict) -> str:
    rows = []
    for slug, stages in meta.get("stages", {}).items():
        for name, info in stages.items():
            rows.append({"model": slug, "stage": name, "status": info.get("status"), "seconds": info.get("seconds"),
                         "note": info.get("note", "")})
    return _table_html(pd.DataFrame(rows), 200) if rows else "<p>No stage has run yet.</p>"


def render_report(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    runs = model_runs(run_dir)
    meta = runs[0].meta if runs else {}
    cfg = meta.get("config", {})
    parts = [f"<h1>emolens report: {html.escape(str(cfg.get('name', run_dir.name)))}</h1>"]
    data = meta.get("dataset", {})
    parts.append(_table_html(pd.DataFrame([
        ("run folder", str(run_dir)), ("study hash", meta.get("study_hash", "")[:16]),
        ("created", meta.get("created")), ("updated", meta.get("updated")), ("emolens", meta.get("emolens")),
        ("data", data.get("how")), ("models", ", ".join(mr.label for mr in runs)),
        ("items analysed", cfg.get("items")), ("sites", ", ".join(cfg.get("sites", []))),
        ("positions", ", ".join(str(p) for p in cfg.get("positions", []))),
    ], columns=["", ""])))
    parts.append("<h2>Where is the emotion computed?</h2>")
    for mr in runs:
        parts.append(f'<p class="summary">{html.escape(summary_text(findings(mr)))}</p>')
    for mr in runs:
        parts.append(f"<h2>{html.escape(mr.label)}</h2>")
        parts.append("<h3>Readout</h3>" + _section_readout(mr))
        parts.append("<h3>Probes</h3>" + _section_probe(mr))
        parts.append("<h3>Ablation</h3>" + _section_effects(mr, "ablate", "Ablation"))
        parts.append("<h3>Activation patching</h3>" + _section_effects(mr, "patch", "Patching"))
        parts.append("<h3>Attention knockout</h3>" + _section_effects(mr, "knockout", "Knockout"))
        parts.append("<h3>Steering</h3>" + _section_steer(mr))
        parts.append("<h3>Prompt robustness</h3>" + _section_robustness(mr))
    parts.append("<h2>Stages</h2>" + _stage_table(meta))
    parts.append("<h2>Config</h2><pre>" + html.escape(_yaml(cfg)) + "</pre>")
    parts.append("<p><small>Every figure is drawn from the tables saved in the run folder. Layers are 1-indexed "
                 "in figures and text, 0-indexed in the tables.</small></p>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>emolens report</title><style>{_CSS}</style>"
            f"</head><body>{''.join(parts)}</body></html>")


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


def write_report(run_dir: str | Path) -> Path:
    """Render ``report.html`` into the run folder (atomically) and return its path."""
    path = Path(run_dir) / "report.html"
    atomic_write_bytes(path, render_report(run_dir).encode())
    return path


__all__: Sequence[str] = ["ModelRun", "findings", "model_runs", "relative_depth", "render_report", "summary_text",
                          "write_report"]
