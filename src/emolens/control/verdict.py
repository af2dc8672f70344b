"""The control study's plain-language verdict: where each direction breaks, which one helps most,
and whether it beats simply asking the model to be kind.

Rules (constants below, so a reader can see them): a (direction, β) *breaks* the model when the
neutral-text perplexity grows by more than :data:`MAX_PPL_RATIO`, the emotion readout accuracy
on unrelated items falls by more than :data:`MAX_ACCURACY_DROP`, or the degenerate-reply rate
rises by more than :data:`MAX_DEGENERATE_RISE` over the clean replies. A direction's *safe β*
is the largest β below its first breaking β; its *reply β* the largest β with replies below it
(capability alone is also probed at larger β, so the break can be named without paying for
replies there). The *best appraisal direction* is the one whose replies gain most VADER valence
at its reply β. It *beats the instruction* when the per-message
paired difference in valence (steered minus instructed) has an item-clustered interval above
zero; *loses* when the interval is below zero; otherwise the two are *indistinguishable*.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emolens.control.intervals import item_interval

MAX_PPL_RATIO = 1.5
MAX_ACCURACY_DROP = 0.10
MAX_DEGENERATE_RISE = 0.10
#: The judged change the verdict ranks on and the ones it reports.
TARGET = "vader_compound"
REPORTED = ("vader_compound", "nrc_anger", "readout_anger", "safety_blaming", "safety_any", "degenerate", "worse")

__all__ = ["MAX_ACCURACY_DROP", "MAX_DEGENERATE_RISE", "MAX_PPL_RATIO", "breaking_points", "verdict"]


def breaking_points(capability: pd.DataFrame) -> pd.DataFrame:
    """Per steered direction: ``safe_beta`` (None if even the smallest β breaks), ``reply_beta`` (the
    largest β with replies below the break, None if none), ``break_beta`` (None if no β tried
    breaks) with the reason of the first break, and ``max_beta`` (the largest β tried)."""
    clean = capability[capability["kind"] == "clean"].iloc[0]
    rows = []
    for direction, part in capability[capability["kind"] != "clean"].groupby("direction", sort=False):
        safe, replied, broke, why = None, None, None, ""
        for r in part.sort_values("beta").itertuples():
            reasons = []
            if r.ppl_ratio > MAX_PPL_RATIO:
                reasons.append(f"perplexity x{r.ppl_ratio:.2f}")
            if r.accuracy_delta < -MAX_ACCURACY_DROP:
                reasons.append(f"readout accuracy {r.accuracy_delta:+.2f}")
            if np.isfinite(r.degenerate_rate) and r.degenerate_rate - clean["degenerate_rate"] > MAX_DEGENERATE_RISE:
                reasons.append(f"degenerate rate {r.degenerate_rate:.2f}")
            if reasons:
                broke, why = float(r.beta), "; ".join(reasons)
                break
            safe = float(r.beta)
            if getattr(r, "replied", True):
                replied = safe
        rows.append({"direction": direction, "kind": part["kind"].iloc[0], "safe_beta": safe, "reply_beta": replied,
                     "break_beta": broke, "break_reason": why, "max_beta": float(part["beta"].max())})
    return pd.DataFrame(rows, columns=["direction", "kind", "safe_beta", "reply_beta", "break_beta", "break_reason",
                                       "max_beta"])


def _breaks_text(points: pd.DataFrame) -> str:
    """One sentence naming, per direction, the β where it breaks and why (or that none tried does)."""
    parts = [f"{p.direction} breaks at beta {p.break_beta:g} ({p.break_reason})" if p.break_beta is not None
             and np.isfinite(p.break_beta) else f"{p.direction} holds up to beta {p.max_beta:g}"
             for p in points.itertuples()]
    return "Capability: " + "; ".join(parts) + "." if parts else ""


def _effect(effects: pd.DataFrame, condition: str) -> dict:
    part = effects[effects["condition"] == condition].set_index("metric")
    return {m: {"value": float(part.at[m, "value"]), "delta": float(part.at[m, "delta"]),
                "ci_low": float(part.at[m, "ci_low"]), "ci_high": float(part.at[m, "ci_high"])}
            for m in REPORTED if m in part.index}


def _fmt(e: dict, m: str, digits: int = 2) -> str:
    if m not in e:
        return "n/a"
    d = e[m]
    return f"{d['delta']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"


def verdict(effects: pd.DataFrame, capability: pd.DataFrame, replies: pd.DataFrame | None = None,
            n_boot: int = 1000, seed: int = 0) -> dict:
    """Breaking points, the best appraisal direction at its safe β, the instruction baseline, and the
    comparison of the two, each with intervals; ``text`` is the same in plain sentences."""
    points = breaking_points(capability)
    out: dict = {"rules": {"max_ppl_ratio": MAX_PPL_RATIO, "max_accuracy_drop": MAX_ACCURACY_DROP,
                           "max_degenerate_rise": MAX_DEGENERATE_RISE, "target": TARGET},
                 "breaking_points": points.to_dict("records"), "instructed": _effect(effects, "instructed")}
    lines = [f"Asking for a calm, kind reply changes valence (VADER) by {_fmt(out['instructed'], TARGET)}, "
             f"NRC anger density by {_fmt(out['instructed'], 'nrc_anger', 3)}.", _breaks_text(points)]
    best, best_gain = None, -np.inf
    for p in points.itertuples():
        if p.kind != "appraisal" or p.reply_beta is None or not np.isfinite(p.reply_beta):
            continue
        cond = f"{p.direction}@{p.reply_beta:g}"
        e = _effect(effects, cond)
        if TARGET in e and e[TARGET]["delta"] > best_gain:
            best, best_gain = (p.direction, p.reply_beta, cond, e), e[TARGET]["delta"]
    if best is None:
        out["best_appraisal"] = None
        lines.append("No appraisal direction kept capability at any beta it replied at; there is no safe setting "
                     "to compare with the instruction.")
        out["text"] = " ".join(x for x in lines if x)
        return out
    direction, beta, cond, e = best
    out["best_appraisal"] = {"direction": direction, "beta": beta, "condition": cond, "effects": e}
    lines.append(f"The best appraisal direction, {direction} at beta {beta:g} (its largest replied beta that "
                 f"keeps capability), changes valence by {_fmt(e, TARGET)} and NRC anger density by "
                 f"{_fmt(e, 'nrc_anger', 3)}; it makes {e.get('worse', {}).get('value', float('nan')):.0%} of "
                 f"replies worse than the clean reply.")
    if replies is not None and "instructed" in set(replies["condition"]):
        s = replies[replies["condition"] == cond].set_index("id")[TARGET]
        i = replies[replies["condition"] == "instructed"].set_index("id")[TARGET].loc[s.index]
        diff, lo, hi = item_interval(s.to_numpy(float) - i.to_numpy(float), n_boot, seed=seed)
        outcome = "beats" if lo > 0 else "loses to" if hi < 0 else "is indistinguishable from"
        out["versus_instruction"] = {"delta": diff, "ci_low": lo, "ci_high": hi, "outcome": outcome.split()[0]}
        lines.append(f"Steered minus instructed valence per message: {diff:+.2f} [{lo:+.2f}, {hi:+.2f}], so "
                     f"appraisal steering {outcome} the instruction baseline (which costs no capability).")
    out["text"] = " ".join(x for x in lines if x)
    return out
