"""The causal curves' peaks as the report states them: where, how sure, against which null, after how many looks.

Reads ``peaks.parquet`` (written beside each causal table by :mod:`emolens.causal.curves`), so a
sentence can be recomputed from a run folder without a model. A peak is stated with its window's
bootstrap interval, its p-value, the null that p is against and the number of settings searched;
a curve on too few items is named as such instead of being read as a finding.
"""

from __future__ import annotations

import html
import math

import pandas as pd

from emolens.report.page import table_html
from emolens.report.runs import ModelRun

__all__ = ["peak_row", "peak_sentence", "peaks", "peaks_html"]

PEAKS_FILE = "peaks.parquet"  # emolens.causal.curves.PEAKS_FILE (the report does not import causal code)
#: Which curve a stage's headline reads: the kind (None: any) of the analysis' main intervention.
HEADLINE_KIND = {"ablate": "zero", "patch": None, "knockout": "keys=context"}


def peaks(mr: ModelRun, stage: str) -> pd.DataFrame | None:
    """A finished causal stage's peaks table (None when the stage did not finish or predates it)."""
    ok, _ = mr.stage_status(stage)
    path = mr.run_dir / mr.slug / stage / PEAKS_FILE
    return pd.read_parquet(path) if ok and path.exists() else None


def peak_row(table: pd.DataFrame | None, stage: str, site: str | None = None) -> pd.Series | None:
    """The headline curve's peak: the stage's main kind at the first position, ``site`` if given
    (else attn when present), all heads together."""
    if table is None or table.empty:
        return None
    t = table[table["head"].isna()] if table["head"].isna().any() else table
    kind = HEADLINE_KIND.get(stage)
    if kind is not None and kind in set(t.kind):
        t = t[t.kind == kind]
    if site is not None:
        t = t[t.site == site]
    elif "attn" in set(t.site):
        t = t[t.site == "attn"]
    if t.empty:
        return None
    t = t[t.position == t.position.iloc[0]]
    return t.sort_values("p_value", kind="stable").iloc[0]


def peak_sentence(row: pd.Series | None, n_layers: int | None = None) -> str:
    """"peak window centred on layer 14 (95% interval 13-15 over item resamples); p = 0.001 against
    <null>, corrected over 66 searched settings; n = 80 items" (1-indexed layers, as the report writes)."""
    if row is None:
        return ""
    if row.get("flag"):
        return f"the peak is not read: {row.flag}"

    def layer(x: float) -> str:
        return "?" if not math.isfinite(x) else str(int(x) + 1)

    where = f"peak window centred on layer {layer(row.peak_window)}"
    if row.n_windows > 1 and math.isfinite(row.window_ci_low):
        span = layer(row.window_ci_low) if row.window_ci_low == row.window_ci_high else \
            f"{layer(row.window_ci_low)}-{layer(row.window_ci_high)}"
        where += f" (95% interval of its location: layer {span}, over item resamples)"
    effect = {"excess_damage": "excess damage over random ablation", "damage": "damage",
              "normalised_logit_diff": "normalised logit difference"}.get(row.effect, row.effect)
    unit = "" if row.effect == "normalised_logit_diff" else " nats"
    return (f"{where}, {effect} {row.peak_value:.2f}{unit}; p = {row.p_value:.2g} against {row.null}, max statistic "
            f"over {int(row.n_settings)} searched settings, n = {int(row.n_clusters)} items")


def peaks_html(mr: ModelRun, stage: str) -> str:
    """A paragraph (the headline peak) and a small table of every curve's peak."""
    table = peaks(mr, stage)
    if table is None or table.empty:
        return ""
    text = peak_sentence(peak_row(table, stage), mr.n_layers)
    shown = table.assign(peak_layer=table.peak_window + 1, ci_layers=[
        f"{int(lo) + 1}-{int(hi) + 1}" if pd.notna(lo) and pd.notna(hi) else "" for lo, hi in
        zip(table.window_ci_low, table.window_ci_high, strict=True)])
    cols = ["kind", "site", "position", "head", "effect", "peak_layer", "ci_layers", "share_at_peak", "peak_value",
            "p_value", "p_uncorrected", "null", "n_settings", "n_clusters", "flag"]
    return (f'<p class="summary">Peak: {html.escape(text)}.</p>' if text else "") + table_html(
        shown[[c for c in cols if c in shown]].round(3))
