"""Report section: prompt robustness (readout per variant, each analysis' depth profile per variant)."""

from __future__ import annotations

import html

from emolens.report.findings import robustness_findings, robustness_text
from emolens.report.page import absent, img, table_html
from emolens.report.robustness_figures import (
    ROBUSTNESS_METRICS,
    readout_rows,
    robustness_analysis_figure,
    robustness_figure,
)
from emolens.report.runs import ModelRun
from emolens.report.section_registry import section


@section("robustness", "Prompt robustness", 70)
def robustness_section(mr: ModelRun) -> str:
    ok, why = mr.stage_status("robustness")
    table = mr.table("robustness") if ok else None
    if table is None:
        return absent(f"No robustness table: {why}.")
    readout = readout_rows(table)
    body = img(robustness_figure(table), "robustness")
    text = robustness_text(robustness_findings(table, mr.n_layers))
    if text:
        body += f'<p class="summary">{html.escape(text)}</p>'
    for analysis in ROBUSTNESS_METRICS:
        png = robustness_analysis_figure(table, analysis, mr.n_layers) if "analysis" in table else None
        if png:
            body += img(png, f"robustness {analysis}")
    cols = [c for c in ("variant", "template", "shots", "metric", "value", "ci_low", "ci_high", "n", "chance")
            if c in readout]
    return body + table_html(readout[readout.metric == "accuracy"][cols])
