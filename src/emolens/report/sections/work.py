"""The report's work table: what each stage asked of the model, and how close to plain forwards it ran.

Each stage's ``stage.json`` records the forwards, tokens and token-layers (tokens x decoder layers)
it ran, its wall time, and the time the same token-layers take as plain batched forwards on the
same machine (``floor_s``, at the rate measured once per run). ``ratio = floor_s / wall`` is the
share of that floor the stage achieved: near 1 a stage is as fast as its forwards can be; far
below, its time goes elsewhere (probe fits, statistics, Python). Counts are exact, so a change in
how much work an analysis does shows here on any machine. ``padding`` is the share of the
token-layers spent on left padding (positions masked out): length-sorted batches keep it low, and
a high share says a stage's batches mix short and long prompts.
"""

from __future__ import annotations

import pandas as pd

from emolens.report.page import table_html
from emolens.report.runs import ModelRun
from emolens.report.section_registry import section

COLUMNS = ("stage", "forwards", "tokens", "token_layers", "padding", "wall_s", "floor_s", "ratio")


def work_frame(mr: ModelRun) -> pd.DataFrame:
    """One row per finished stage that recorded its work (stages that never touched the model have none)."""
    rows = []
    for stage in mr.meta.get("config", {}).get("stages", []):
        rec = mr.stage_record(stage) or {}
        work = rec.get("work")
        if work:
            rows.append({"stage": stage, "forwards": work.get("forwards"), "tokens": work.get("tokens"),
                         "token_layers": work.get("token_layers"),
                         "padding": (work["pad_token_layers"] / work["token_layers"] if work.get("token_layers")
                                     else 0.0) if "pad_token_layers" in work else None,
                         "wall_s": work.get("seconds"),
                         "floor_s": work.get("floor_s"), "ratio": work.get("ratio")})
    return pd.DataFrame(rows, columns=list(COLUMNS))


@section("work", "Model work per stage", 95)
def render(mr: ModelRun) -> str:
    frame = work_frame(mr)
    if frame.empty:
        return "<p>No stage of this run recorded its model work (stages cached from older runs do not).</p>"
    return ("<p>Forwards, tokens and token-layers (tokens x layers) each stage ran; <i>floor</i> is the time those "
            "token-layers take as plain batched forwards on this machine, <i>ratio</i> = floor / wall; "
            "<i>padding</i> is the share of the token-layers spent on left padding.</p>"
            + table_html(frame.round(3), 50))
