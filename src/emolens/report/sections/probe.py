"""Report section: probe curves by layer, position x layer and appraisal heatmaps, the human baseline."""

from __future__ import annotations

import html

from emolens.report.page import absent, img, table_html
from emolens.report.plotting import fig_png, subplots
from emolens.report.probe_figures import appraisal_heatmap, probe_curves, probe_heatmaps
from emolens.report.runs import ModelRun
from emolens.report.section_registry import section


@section("probe", "Probes", 20)
def probe_section(mr: ModelRun) -> str:
    ok, why = mr.stage_status("probe")
    probes = mr.table("probe") if ok else None
    if probes is None:
        return absent(f"No probe tables: {why or 'probes.parquet is missing'}.")
    summary = mr.json("probe", "summary.json") or {}
    body = "".join(f'<p class="warning"><b>Not a finding:</b> {html.escape(w)}</p>'
                   for w in summary.get("warnings", []))
    tasks = [t for t in ("emotion", "emotion/mlp") if t in set(probes.task)]
    fig, axes = subplots(1, 2, figsize=(11, 3.6))
    probe_curves(axes[0], probes, mr.n_layers, "accuracy", tasks[0] if tasks else "emotion")
    axes[0].set_title("emotion probe: held-out accuracy", fontsize=9)
    probe_curves(axes[1], probes, mr.n_layers, "balanced_accuracy", tasks[0] if tasks else "emotion", legend=False)
    bal = probes[(probes.task == "emotion") & (probes.metric == "balanced_accuracy")]
    if len(bal):
        axes[1].axhline(float(bal.chance.iloc[0]), ls=":", color="grey")
    axes[1].set_title("balanced accuracy (chance 1/K)", fontsize=9)
    body += img(fig_png(fig), "probe curves")
    if "emotion/mlp" in tasks:
        fig, ax = subplots(figsize=(6, 3.4))
        probe_curves(ax, probes, mr.n_layers, "accuracy", "emotion/mlp")
        ax.set_title("MLP probe (non-linear control)", fontsize=9)
        body += img(fig_png(fig), "mlp probe curves")
    heat = probe_heatmaps(probes)
    if heat:
        body += "<h3>Position x layer</h3>" + img(heat, "probe heatmaps")
    app = appraisal_heatmap(probes)
    if app:
        body += "<h3>Appraisal probes</h3>" + img(app, "appraisal probes")
    human = probes[probes.task == "human_baseline"]
    if len(human):
        body += "<h3>Human baseline (appraisal ratings → emotion)</h3>" + table_html(
            human[["metric", "value", "ci_low", "ci_high", "n", "chance"]])
    return body
