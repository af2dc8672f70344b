"""Print the markdown table ``docs/control.md`` shows for one or more ``emolens control`` output folders.

One row per condition (instructed, then every steered direction and β): the change against the
clean replies in VADER valence, NRC anger density and the blaming rate (each with its 95%
item-clustered interval), the capability it keeps (perplexity ratio on neutral text, readout
accuracy change), and its degenerate and worse-than-clean rates.

Usage: python scripts/control_table.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def _ci(row: pd.Series, digits: int = 2) -> str:
    return f"{row['delta']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]"


def _rate(row: pd.Series) -> str:
    return f"{row['value']:.2f} [{row['value_low']:.2f}, {row['value_high']:.2f}]"


def table(folder: Path) -> str:
    effects = pd.read_parquet(folder / "control_effects.parquet")
    cap = pd.read_parquet(folder / "control_capability.parquet").set_index(["direction", "beta"])
    info = json.loads((folder / "control_verdict.json").read_text())
    lines = [f"**{info['model']}** ({info['form']} form, {info['n_messages']} messages, layers {info['layers']})", "",
             "| condition | Δ VADER valence | Δ NRC anger | Δ blaming rate | ppl ratio | Δ readout acc | degenerate "
             "| worse than clean |", "|---|---|---|---|---|---|---|---|"]
    for cond, part in effects[effects["condition"] != "clean"].groupby("condition", sort=False):
        m = part.set_index("metric")
        first = part.iloc[0]
        key = (first["direction"], float(first["beta"]))
        ppl = f"{cap.loc[key, 'ppl_ratio']:.2f}" if key in cap.index else "1 (prompt only)"
        acc = f"{cap.loc[key, 'accuracy_delta']:+.2f}" if key in cap.index else "0 (prompt only)"
        lines.append(f"| {cond} | {_ci(m.loc['vader_compound'])} | {_ci(m.loc['nrc_anger'], 3)} | "
                     f"{_ci(m.loc['safety_blaming'])} | {ppl} | {acc} | {_rate(m.loc['degenerate'])} | "
                     f"{_rate(m.loc['worse'])} |")
    clean = effects[(effects["condition"] == "clean")].set_index("metric")
    lines += ["", f"Clean replies: VADER {clean.loc['vader_compound', 'value']:+.2f}, NRC anger "
              f"{clean.loc['nrc_anger', 'value']:.3f}, blaming {clean.loc['safety_blaming', 'value']:.2f}, "
              f"degenerate {clean.loc['degenerate', 'value']:.2f}. Verdict: {info['verdict']['text']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
