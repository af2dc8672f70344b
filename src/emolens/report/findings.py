"""Where is the emotion computed? The numbers behind the report's summary sentences, and the sentences.

Everything here reads saved tables only (through :class:`emolens.report.runs.ModelRun`), so a
finding can be recomputed from a run folder without a model.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from emolens.labels import EMOTIONS
from emolens.report.causal_peaks import peak_row, peak_sentence, peaks
from emolens.report.plotting import main_position, numeric_positions
from emolens.report.robustness_figures import ROBUSTNESS_METRICS, readout_rows
from emolens.report.runs import ModelRun, relative_depth
from emolens.steering.theory import best_residualised_row, n_settings_of, searched_text, split_reference

#: ``reference`` of the alignment rows of directions fitted on residualised ratings (``steering.theory``).


def promotion_success(table: pd.DataFrame) -> pd.DataFrame:
    """Emotion promotion rows of a steering table: success on the promoted label, by window and beta.

    Columns: emotion, method, window_center, beta, value, ci_low, ci_high, random (the mean success
    that the norm-matched random directions of the same window and beta reach on that label).
    """
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
    for key, name, pick in (("patch_peak", "patch", "max"), ("ablate_dip", "ablate", "min"),
                            ("knockout_dip", "knockout", "min")):
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
            kind = None
            if "kind" in g:  # one condition kind per curve: knockout's context source when it has one, else the first
                kinds = list(dict.fromkeys(g["kind"]))
                kind = "keys=context" if name == "knockout" and "keys=context" in kinds else kinds[0]
                g = g[g["kind"] == kind]
            g = g.groupby("window_center", as_index=False)["value"].mean().dropna(subset=["value"])
            if g.empty:  # e.g. patching transfer is undefined when no pair's clean readouts differ
                continue
            row = g.loc[g.value.idxmax() if pick == "max" else g.value.idxmin()]
            per_site[site] = {"layer": int(row.window_center), "value": float(row.value), "kind": kind}
        out[key] = {"metric": metric, "sites": per_site}
        site = "attn" if "attn" in per_site else (next(iter(per_site)) if per_site else None)
        peak = peak_sentence(peak_row(peaks(mr, name), name, site), n)
        if peak:
            out[key]["peak"] = peak
    promo = promotion_success(mr.table("steer")) if mr.table("steer") is not None else pd.DataFrame()
    top = pd.Series(dtype=float)
    if len(promo):
        top = promo[promo.beta == promo.beta.max()].groupby("window_center")["value"].mean().dropna()
    if len(top):
        out["steer_peak"] = {"layer": int(top.idxmax()), "value": float(top.max()), "beta": float(promo.beta.max())}
    align = mr.table("alignment")
    align, resid = split_reference(align)  # the residualised directions' rows are read below
    if align is not None and "metric" in align:
        best = align[align.metric == "best_alignment"].dropna(subset=["value"])
        if len(best):
            b = best.loc[best.value.idxmax()]
            beyond = align[align.metric == "best_alignment_beyond_emotion"].dropna(subset=["p_value"])
            out["steer_alignment"] = {"layer": int(b.window), "value": float(b.value), "p": float(b.p_value),
                                      "n_settings": int(b.n_settings), "fit": str(b.get("fit", "")),
                                      "beta": float(b.beta), "null": "random directions", "searched": searched_text(b),
                                      "p_beyond_emotion": float(beyond.p_value.iloc[0]) if len(beyond) else None}
    r = best_residualised_row(resid)
    if r is not None:
        out["steer_residualised"] = {"layer": int(r.window), "value": float(r.value), "p": float(r.p_value),
                                     "n_null": int(r.n_emotion_null), "n_settings": n_settings_of(r),
                                     "searched": searched_text(r)}
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
                     f"({f['patch_peak']['metric']} {p['value']:.2f})" + _peak(f["patch_peak"]))
    if f.get("ablate_dip", {}).get("sites"):
        sites = f["ablate_dip"]["sites"]
        site = "attn" if "attn" in sites else min(sites, key=lambda s: sites[s]["value"])
        d = sites[site]
        parts.append(f"Ablating {site} hurts most with the window centred on {at(d['layer'])} "
                     f"({f['ablate_dip']['metric']} {d['value']:.2f})" + _peak(f["ablate_dip"]))
    if f.get("knockout_dip", {}).get("sites"):
        k = next(iter(f["knockout_dip"]["sites"].values()))
        source = str(k.get("kind") or "keys=context").split("=", 1)[-1]
        parts.append(f"Blocking answer-cue to {source} attention hurts most with the window centred on "
                     f"{at(k['layer'])} "
                     f"({f['knockout_dip']['metric']} {k['value']:.2f}; a lower bound, as only direct edges are cut)"
                     + _peak(f["knockout_dip"]))
    if "steer_peak" in f:
        p = f["steer_peak"]
        parts.append(f"Adding emotion directions (β={p['beta']:g}) promotes the emotion most in the window centred "
                     f"on {at(p['layer'])} (mean success {p['value']:.2f}).")
    if "steer_alignment" in f:
        a = f["steer_alignment"]
        parts.append(f"Steering appraisal directions agrees best with the human ratings in the window centred on "
                     f"{at(a['layer'])} (theory alignment {a['value']:.2f} at β={a['beta']:g}, {a['searched']}; "
                     f"p = {a['p']:.2g} against random directions, directions fit = {a['fit']}).")
        if a.get("p_beyond_emotion") is not None:
            parts.append(f"Against refits on ratings permuted within each emotion (appraisal information beyond "
                         f"the emotion) p = {a['p_beyond_emotion']:.2g}.")
        else:
            parts.append("No emotion-only null was run, so this alignment may reflect the emotion alone.")
    if "steer_residualised" in f:
        r = f["steer_residualised"]
        parts.append(f"Directions fitted on ratings residualised on the emotion (only appraisal variation beyond "
                     f"the emotion) align {r['value']:.2f} ({at(r['layer'])}; {r['searched']}): p = {r['p']:.2g} "
                     f"against {r['n_null']} refits on the residuals permuted within each emotion.")
    if len(parts) <= 1:
        parts.append("No probe or causal tables yet, so nothing can be said about where the emotion is computed.")
    return " ".join(parts)


def _peak(found: dict[str, Any]) -> str:
    """The tested peak of a causal curve (its location interval, p, null and searched settings), if saved."""
    return f"; tested: {found['peak']}." if found.get("peak") else "."


def robustness_findings(table: pd.DataFrame, n_layers: int | None = None) -> dict[str, dict[str, Any]]:
    """Per prompt variant: readout accuracy, where the probe peaks (best site and layer), where zero
    ablation dips and patching peaks (first site, window centre), from a robustness table."""
    out: dict[str, dict[str, Any]] = {}
    for variant, g in table.groupby("variant", sort=False):
        f: dict[str, Any] = {}
        acc = readout_rows(g)
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


__all__ = ["findings", "promotion_success", "robustness_findings", "robustness_text", "summary_text"]
