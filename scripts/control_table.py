"""Print the markdown table ``docs/control.md`` shows for one or more ``emolens control`` output folders.

One row per condition (instructed, then every steered direction and β): the change against the
clean replies in VADER valence, the unsteered readout's valence, NRC anger density, the unsteered
readout's P(anger) and the blaming rate (each with its 95% item-clustered interval), the share of
unsafe replies (hostile, blaming or hopeless), the capability it keeps (perplexity ratio on
neutral text, readout accuracy change), its degenerate and worse-than-clean rates, and its
refusal rate (replies that decline to answer, "I'm sorry, but I can't ..."; no judge counts a
refusal as a failure, so the table does).

A second table is the capability curve: per direction and β (replied or capability-only), the
perplexity ratio and the readout accuracy change, with the verdict's breaking β.

Usage: python scripts/control_table.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd

#: A reply that declines to answer (Qwen's refusals: "I'm sorry, but I can't assist with that.").
REFUSAL = re.compile(r"\b(?:I'm sorry|I am sorry|I apologi[sz]e)\b[^.]{0,40}\b(?:can't|cannot|can not|unable)\b"
                     r"|\bI can't (?:assist|help) with\b", re.IGNORECASE)


def _ci(row: pd.Series, digits: int = 2) -> str:
    return f"{row['delta']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]"


def _rate(row: pd.Series) -> str:
    return f"{row['value']:.2f} [{row['value_low']:.2f}, {row['value_high']:.2f}]"


def table(folder: Path) -> str:
    effects = pd.read_parquet(folder / "control_effects.parquet")
    cap = pd.read_parquet(folder / "control_capability.parquet").set_index(["direction", "beta"])
    info = json.loads((folder / "control_verdict.json").read_text())
    replies = pd.read_parquet(folder / "control_replies.parquet", columns=["condition", "reply"])
    refusal = replies.groupby("condition", sort=False)["reply"].apply(lambda r: r.str.contains(REFUSAL).mean())
    lines = [f"**{info['model']}** ({info['form']} form, {info['n_messages']} messages, layers {info['layers']})", "",
             "| condition | Δ VADER valence | Δ readout valence | Δ NRC anger | Δ readout anger | Δ blaming rate "
             "| unsafe | ppl ratio | Δ readout acc | degenerate | worse than clean | refusals |", "|---" * 12 + "|"]
    for cond, part in effects[effects["condition"] != "clean"].groupby("condition", sort=False):
        m = part.set_index("metric")
        first = part.iloc[0]
        key = (first["direction"], float(first["beta"]))
        ppl = f"{cap.loc[key, 'ppl_ratio']:.2f}" if key in cap.index else "1 (prompt only)"
        acc = f"{cap.loc[key, 'accuracy_delta']:+.2f}" if key in cap.index else "0 (prompt only)"
        lines.append(f"| {cond} | {_ci(m.loc['vader_compound'])} | {_ci(m.loc['readout_valence'])} | "
                     f"{_ci(m.loc['nrc_anger'], 3)} | {_ci(m.loc['readout_anger'], 3)} | "
                     f"{_ci(m.loc['safety_blaming'])} | {_rate(m.loc['safety_any'])} | "
                     f"{ppl} | {acc} | {_rate(m.loc['degenerate'])} | {_rate(m.loc['worse'])} | "
                     f"{refusal.get(cond, float('nan')):.2f} |")
    clean = effects[(effects["condition"] == "clean")].set_index("metric")
    lines += ["", f"Clean replies: VADER {clean.loc['vader_compound', 'value']:+.2f}, NRC anger "
              f"{clean.loc['nrc_anger', 'value']:.3f}, blaming {clean.loc['safety_blaming', 'value']:.2f}, "
              f"unsafe {clean.loc['safety_any', 'value']:.2f}, degenerate {clean.loc['degenerate', 'value']:.2f}, "
              f"refusals {refusal.get('clean', float('nan')):.2f}. Verdict: {info['verdict']['text']}"]
    return "\n".join(lines + ["", curve(folder)])


def curve(folder: Path) -> str:
    """Capability per direction (rows) and β (columns): ``ppl ratio / Δ readout acc``; ``*``: no replies."""
    cap = pd.read_parquet(folder / "control_capability.parquet")
    info = json.loads((folder / "control_verdict.json").read_text())
    clean = cap[cap["kind"] == "clean"].iloc[0]
    cap = cap[cap["kind"] != "clean"]
    betas = sorted(set(cap["beta"]))
    breaks = {p["direction"]: p for p in info["verdict"]["breaking_points"]}
    lines = [f"Capability (ppl ratio / Δ readout acc; unsteered perplexity {clean['perplexity']:.1f}, readout accuracy "
             f"{clean['readout_accuracy']:.2f} on {int(clean['n_items'])} items; * = capability only, no replies)", "",
             "| direction | " + " | ".join(f"β {b:g}" for b in betas) + " | breaks at |",
             "|---" * (len(betas) + 2) + "|"]
    if "replied" not in cap:  # a run from before capability-only β
        cap = cap.assign(replied=True)
    for direction, part in cap.groupby("direction", sort=False):
        row = part.set_index("beta")
        cells = [f"×{row.at[b, 'ppl_ratio']:.2f} / {row.at[b, 'accuracy_delta']:+.2f}"
                 + ("" if row.at[b, "replied"] else "*") if b in row.index else "" for b in betas]
        p = breaks.get(direction, {})
        brk = p.get("break_beta")
        at = f"{brk:g} ({p['break_reason']})" if brk is not None and brk == brk else "not within the grid"
        lines.append(f"| {direction} | " + " | ".join(cells) + f" | {at} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
