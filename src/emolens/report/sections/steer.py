"""Report section: steering figures, which items fitted the directions, theory alignment, generations."""

from __future__ import annotations

import html

import pandas as pd

from emolens.report.page import absent, img, table_html
from emolens.report.runs import ModelRun
from emolens.report.section_registry import section
from emolens.report.steering_figures import steering_figures
from emolens.steering.theory import best_residualised_row, n_settings_of, split_reference


@section("steer", "Steering", 60)
def steer_section(mr: ModelRun) -> str:
    ok, why = mr.stage_status("steer")
    if not ok:
        return absent(f"No steering tables: {why}.")
    body = ""
    table = mr.table("steer")
    for name, png in steering_figures(table, mr.n_layers):
        body += img(png, f"steering {name}")
    if table is not None and "fit" in table:
        body += f"<p>{html.escape(fit_text(table, mr.stage_record('steer')))}</p>"
    align = mr.table("alignment")
    align, resid = split_reference(align)
    if align is not None and len(align):
        best = align[align.metric.isin(["best_alignment", "best_alignment_beyond_emotion"])]
        text = best_alignment_text(align)
        body += "<h3>Theory alignment</h3>" + (f'<p class="summary">{html.escape(text)}</p>' if text else "")
        if len(best):
            body += table_html(best[[c for c in ALIGN_COLUMNS + ("n_settings",) if c in best]])
        per = align[~align.metric.isin(["best_alignment", "best_alignment_beyond_emotion"])]
        body += table_html(per[[c for c in ALIGN_COLUMNS if c in per]])
        if resid is not None and len(resid):
            body += ("<h3>Theory alignment of directions fitted on ratings residualised on emotion</h3>"
                     f'<p class="summary">{html.escape(residualised_text(resid))}</p>'
                     + table_html(resid[[c for c in ALIGN_COLUMNS + ("n_settings",) if c in resid]]))
    else:
        body += absent("No theory-alignment table.")
    gens = mr.table("generations")
    if gens is not None and len(gens):
        body += "<h3>Sample generations</h3>" + generation_text(gens, mr.stage_record("steer"))
        body += table_html(generation_rows(gens), 40)
    else:
        body += absent("No sample generations were saved.")
    return body or absent("The steering stage saved no tables.")


ALIGN_COLUMNS: tuple[str, ...] = ("part", "metric", "unit", "method", "fit", "window", "layers", "beta", "position",
                                  "value",
                                  "p_value", "p_holm", "null", "n_random", "n_emotion_null")
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
    controls = ""
    if "n_random" in summary and summary.get("null_design") == "selected":
        controls = (f"; {summary['n_random']} norm-matched random directions and the within-emotion refits at the "
                    f"setting chosen on {summary.get('n_selection')} selection items, steering "
                    f"{summary.get('n_test')} test items")
    elif "n_random" in summary:
        controls = f"; {summary['n_random']} norm-matched random directions per setting"
    return ("Directions " + " / ".join(f"fit = {m}: {_FIT_WORDS.get(m, m)}" for m in modes) + sizes + controls
            + ".")


def best_alignment_text(align: pd.DataFrame) -> str:
    """The headline: the best theory alignment over the searched windows and betas, with the p-value
    corrected for that search (max statistic over the random directions)."""
    best = align[align.metric == "best_alignment"].dropna(subset=["value"])
    beyond = align[align.metric == "best_alignment_beyond_emotion"] if "metric" in align else align.iloc[:0]
    out = []
    for _, b in best.iterrows():
        fit = b.get("fit", "?")
        text = (f"Best theory alignment ({b.method}, fit = {fit}, position {b.position}): {b.value:.2f} in "
                f"the window centred on layer {int(b.window) + 1} (layers {b.layers}, 0-indexed), β = {b.beta:g}; "
                f"{_search_words(b)} Against {int(b.n_random)} covariance-matched random directions: "
                f"p = {b.p_value:.2g} ({_p_words(b)}): the directions move emotions the way the human "
                f"appraisal profile says more than an arbitrary push of the same size.")
        if len(beyond) and pd.notna(beyond.p_value.iloc[0]):
            e = beyond.iloc[0]
            text += (f" Against {int(e.n_emotion_null)} refits on ratings permuted within each emotion (the "
                     f"emotion-only null): p = {e.p_value:.2g} -- the test of appraisal information beyond the "
                     f"emotion itself; only this p-value supports that claim.")
        else:
            text += (" No emotion-only null was run: the alignment may come from the emotion alone (the "
                     "directions and the reference share the rating-emotion association).")
        out.append(text)
    return " ".join(out)


def _search_words(row: pd.Series) -> str:
    """How the headline setting was found (which null design, :mod:`emolens.steering.selection`)."""
    if row.get("design") == "selected":
        return (f"chosen among {n_settings_of(row)} searched settings (every method, position, window and β) by "
                f"its alignment on {int(row.n_selection)} selection items, and measured, with every null, on "
                f"{int(row.n_test)} other test items.")
    return f"the best of {n_settings_of(row)} searched settings (every method, position, window and β)."


def _p_words(row: pd.Series) -> str:
    """Why a headline p-value is valid for the search behind it."""
    if row.get("design") == "selected":
        return "on the test items, which did not take part in the choice, so no correction for the search is due"
    return f"max-statistic corrected over the {n_settings_of(row)} searched settings"


def residualised_text(resid: pd.DataFrame) -> str:
    """The residualised directions' best alignment, with the null its p-value is against."""
    b = best_residualised_row(resid)
    if b is None:
        return "No residualised direction could be aligned."
    p = (f"p = {b.p_value:.2g} against {int(b.n_emotion_null)} refits on the residuals permuted within each emotion "
         f"(the emotion-only null; {_p_words(b)})"
         if pd.notna(b.p_value) else "no within-emotion refits were run, so there is no p-value")
    return (f"Directions fitted on appraisal ratings minus their emotion's mean rating hold no emotion-mean "
            f"information, so a model that knows only the emotion gives them nothing to align with. Their best "
            f"alignment with the human profile: {b.value:.2f} in the window centred on layer {int(b.window) + 1}, "
            f"β = {b.beta:g}; {p}. A small p here is evidence of appraisal information beyond the emotion.")


def generation_rows(gens: pd.DataFrame) -> pd.DataFrame:
    """The generations table as the report shows it: fluency flags as text, degenerate rows marked."""
    g = gens.copy()
    if "guard_flags" in g:
        g["guard_flags"] = g["guard_flags"].map(lambda f: ", ".join(list(f)) if f is not None and len(f) else "")
    cols = ["id", "direction", "kind", "window", "beta", "position", "continuation", "emotion", "mean_logp",
            "guard_flags", "degenerate"]
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


__all__ = ["best_alignment_text", "fit_text", "generation_rows", "generation_text", "residualised_text",
           "steer_section"]
