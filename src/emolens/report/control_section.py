"""The control study's report section, rendered from the tables ``emolens control`` writes.

:func:`control_section` returns an HTML fragment (verdict with intervals, dose-response per
direction and judge, the trade-off curve, capability versus β, judge agreement and a table of
example replies: clean vs best steered vs instructed); :func:`write_control_report` wraps it in
a self-contained page (``control_report.html``) so a control run has a report of its own.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from emolens.report.control_figures import capability_figure, dose_response_figure, tradeoff_figure
from emolens.report.page import img
from emolens.report.plotting import fig_png

_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 6px;"
        "vertical-align:top}th{background:#f4f4f4}img{max-width:100%}"
        ".summary{background:#eef6ee;padding:.6em 1em;border-left:4px solid #2ca02c}")
#: Headline metrics of the effects table shown in the section, in order.
HEADLINE = ("vader_compound", "nrc_anger", "readout_valence", "safety_hostile", "safety_blaming", "safety_hopeless",
            "degenerate", "worse")

__all__ = ["control_section", "example_replies", "write_control_report"]


def _img(fig, alt: str) -> str:
    return img(fig_png(fig, dpi=110), alt)


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, escape=True)


def example_replies(replies: pd.DataFrame, condition: str | None, n: int = 6) -> pd.DataFrame:
    """One message per domain (first ``n``): its clean, steered (``condition``) and instructed replies."""
    clean = replies[replies["condition"] == "clean"]
    picks = clean.groupby("domain", sort=False).head(1).head(n)
    by = replies.set_index(["condition", "id"])["reply"]
    steered = f"steered ({condition})" if condition else "steered (no safe appraisal setting)"
    rows = [{"message": r.message, "clean": r.reply, steered: by.get((condition, r.id), "") if condition else "",
             "instructed": by.get(("instructed", r.id), "")} for r in picks.itertuples()]
    return pd.DataFrame(rows, columns=["message", "clean", steered, "instructed"])


def control_section(folder: str | Path) -> str:
    """The HTML fragment of a control run's results (the folder ``emolens control --out`` wrote)."""
    folder = Path(folder)
    needed = [folder / f"control_{n}.parquet" for n in ("replies", "effects", "capability", "agreement")]
    if not all(p.exists() for p in needed) or not (folder / "control_verdict.json").exists():
        return '<p class="absent">No control study in this folder (run emolens control).</p>'
    replies, effects, capability, agree = (pd.read_parquet(p) for p in needed)
    info = json.loads((folder / "control_verdict.json").read_text())
    verdict = info["verdict"]
    parts = [f'<p class="summary">{html.escape(verdict["text"])}</p>',
             f"<p>{info['n_messages']} messages ({html.escape(str(info['form']))} form), steering at layers "
             f"{info['layers']}, directions fitted on {info['n_fit']} {html.escape(str(info['fit']))} items; readout "
             f"retention on {info['n_retention']} {html.escape(str(info['retention']))} items; perplexity on "
             f"{info['n_neutral']} neutral texts. Intervals: 95% item-clustered bootstrap.</p>"]
    head = effects[effects["metric"].isin(HEADLINE)]
    wide = head.pivot_table(index=["condition", "beta"], columns="metric", values="delta", sort=False)
    parts.append("<h4>Change versus clean replies (mean per message; rates as fractions)</h4>"
                 + _table(wide.reset_index()))
    points = pd.DataFrame(verdict["breaking_points"])
    if len(points):
        parts.append("<h4>Where each direction breaks</h4>" + _table(points))
    parts.append("<h4>Dose-response per judge</h4>" + _img(dose_response_figure(effects), "dose response"))
    parts.append("<h4>Control versus capability</h4>" + _img(tradeoff_figure(effects, capability), "trade-off"))
    parts.append(_img(capability_figure(capability), "capability versus beta") + _table(capability))
    parts.append("<h4>Agreement between judges (Spearman across replies)</h4>" + _table(agree))
    best = verdict.get("best_appraisal") or {}
    parts.append("<h4>Example replies</h4>" + _table(example_replies(replies, best.get("condition"))))
    return "".join(parts)


def write_control_report(folder: str | Path) -> Path:
    """Write ``control_report.html`` (self-contained) into the control run's folder."""
    folder = Path(folder)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>emolens control</title><style>{_CSS}"
            f"</style></head><body><h1>Controllable replies in sensitive contexts</h1>{control_section(folder)}"
            f"</body></html>")
    path = folder / "control_report.html"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
