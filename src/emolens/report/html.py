"""``report.html`` for a run: one self-contained page drawn only from the run's saved tables.

Figures are PNGs embedded as base64 (no CDN, no script, opens offline). Each section reads the
tables its stage saved; a section whose tables are absent says why (the stage was not requested,
did not finish, or its analysis module is not available). Layers are 0-indexed in the tables and
1-indexed in every figure and sentence here; *relative depth* is ``(layer + 1) / n_layers``, so
the last layer is 1.0 (the paper's convention, e.g. layer 10 of 16 = 0.63).

The page is assembled here; its parts live in :mod:`emolens.report.sections` (one module per
analysis, registered in :mod:`emolens.report.section_registry`), the summary sentences in
:mod:`emolens.report.findings`, and the run-folder reader in :mod:`emolens.report.runs`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from emolens.paths import atomic_write_bytes
from emolens.report.findings import findings, summary_text
from emolens.report.page import CSS, table_html
from emolens.report.runs import model_runs
from emolens.report.sections import ordered_sections


def _stage_table(meta: dict) -> str:
    rows = []
    for slug, stages in meta.get("stages", {}).items():
        for name, info in stages.items():
            rows.append({"model": slug, "stage": name, "status": info.get("status"), "seconds": info.get("seconds"),
                         "note": info.get("note", "")})
    return table_html(pd.DataFrame(rows), 200) if rows else "<p>No stage has run yet.</p>"


def render_report(run_dir: str | Path) -> str:
    """The report page of a run: summary, one part per model (every registered section), stages, config."""
    run_dir = Path(run_dir)
    runs = model_runs(run_dir)
    meta = runs[0].meta if runs else {}
    cfg = meta.get("config", {})
    parts = [f"<h1>emolens report: {html.escape(str(cfg.get('name', run_dir.name)))}</h1>"]
    data = meta.get("dataset", {})
    if data.get("fallback_reason"):
        asked = html.escape(str(cfg.get("dataset", {}).get("spec")))
        used = html.escape(str(data.get("how")))
        parts.append(f'<p class="warning"><b>Fallback data:</b> this run did not use {asked}; it used {used}. '
                     "Its numbers describe the fallback data, not the corpus the config names.</p>")
    parts.append(table_html(pd.DataFrame([
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
        for sec in ordered_sections():
            parts.append(f"<h3>{html.escape(sec.title)}</h3>" + sec.render(mr))
    parts.append("<h2>Stages</h2>" + _stage_table(meta))
    parts.append("<h2>Config</h2><pre>" + html.escape(_yaml(cfg)) + "</pre>")
    parts.append("<p><small>Every figure is drawn from the tables saved in the run folder. Layers are 1-indexed "
                 "in figures and text, 0-indexed in the tables.</small></p>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>emolens report</title><style>{CSS}</style>"
            f"</head><body>{''.join(parts)}</body></html>")


def _yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def write_report(run_dir: str | Path) -> Path:
    """Render ``report.html`` into the run folder (atomically) and return its path."""
    path = Path(run_dir) / "report.html"
    atomic_write_bytes(path, render_report(run_dir).encode())
    return path


__all__ = ["render_report", "write_report"]
