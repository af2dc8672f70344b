"""Report sections: ablation, activation patching and attention knockout heatmaps, and each curve's peak
(window, location interval, max-statistic p against the analysis' null; :mod:`emolens.report.causal_peaks`)."""

from __future__ import annotations

from emolens.report.causal_figures import effect_heatmaps
from emolens.report.causal_peaks import peaks_html
from emolens.report.page import absent, img
from emolens.report.runs import ModelRun
from emolens.report.section_registry import section

MAIN_METRICS = {"ablate": ("agreement", "delta_logp_gold"), "patch": ("transfer", "normalised_logit_diff"),
                 "knockout": ("agreement", "delta_logp_gold")}


def effects_section(mr: ModelRun, stage: str, title: str) -> str:
    ok, why = mr.stage_status(stage)
    table = mr.table(stage) if ok else None
    if table is None:
        return absent(f"No {title.lower()} tables: {why or 'the table is missing'}.")
    figs = effect_heatmaps(table, title, mr.n_layers, MAIN_METRICS.get(stage))
    drawn = "".join(img(png, name) for name, png in figs) or absent("The table has no rows to draw.")
    return peaks_html(mr, stage) + drawn


@section("ablate", "Ablation", 30)
def ablate_section(mr: ModelRun) -> str:
    return effects_section(mr, "ablate", "Ablation")


@section("patch", "Activation patching", 40)
def patch_section(mr: ModelRun) -> str:
    return effects_section(mr, "patch", "Patching")


@section("knockout", "Attention knockout", 50)
def knockout_section(mr: ModelRun) -> str:
    return effects_section(mr, "knockout", "Knockout")
