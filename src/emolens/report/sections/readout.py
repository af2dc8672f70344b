"""Report section: the readout's metrics and confusion matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd

from emolens.report.page import absent, img, table_html
from emolens.report.plotting import fig_png
from emolens.report.readout_figures import readout_confusion
from emolens.report.runs import ModelRun
from emolens.report.section_registry import section


@section("readout", "Readout", 10)
def readout_section(mr: ModelRun) -> str:
    ok, why = mr.stage_status("readout")
    if not ok:
        return absent(f"No readout: {why}.")
    metrics = mr.json("readout", "metrics.json") or {}
    frame = mr.table("readout")
    raw = metrics.get("raw", {})
    rows = [("items", raw.get("n")), ("accuracy", raw.get("accuracy")),
            ("95% CI", f"[{raw.get('accuracy_ci_low', np.nan):.3f}, {raw.get('accuracy_ci_high', np.nan):.3f}]"),
            ("balanced accuracy", raw.get("balanced_accuracy")), ("macro-F1", raw.get("macro_f1")),
            ("majority baseline", raw.get("majority_baseline")), ("label scoring", metrics.get("label_scoring"))]
    if "calibrated" in metrics:
        rows.append(("calibrated accuracy", metrics["calibrated"].get("accuracy")))
    body = table_html(pd.DataFrame(rows, columns=["metric", "value"]))
    if frame is not None:
        fig = readout_confusion(frame, f"{mr.spec}: confusion (n={len(frame)})")
        if fig is not None:
            body += img(fig_png(fig), "confusion matrix")
    return body
