"""The files an analysis leaves in its folder: its tables and its figures, written in one call.

``emolens ablate | patch | knockout | steer`` and the study's causal and steer stages all write
through here, so a study folder and a CLI folder hold the same tables *and* the same figures.
It lives in ``report/`` because the figures do; the tables are written by each analysis' own
``write_outputs`` (:mod:`emolens.causal.common`, :mod:`emolens.steering.run`).
"""

from __future__ import annotations

from pathlib import Path

from emolens.causal.common import CausalResult
from emolens.causal.common import write_outputs as write_causal_tables
from emolens.report.causal_figures import plot_all
from emolens.report.steering_figures import plot_dose_response, plot_label_bars
from emolens.steering.run import SteeringRun
from emolens.steering.run import write_outputs as write_steering_tables

__all__ = ["CAUSAL_METRICS", "direction_slug", "write_causal", "write_steering"]

#: The metrics each causal analysis draws heatmaps of.
CAUSAL_METRICS: dict[str, tuple[str, ...]] = {
    "ablation": ("agreement", "accuracy", "delta_logp_gold"),
    "patching": ("transfer", "remained", "normalised_logit_diff"),
    "knockout": ("agreement", "accuracy", "delta_logp_gold"),
}


def write_causal(result: CausalResult, out_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """Write a causal result's tables and heatmaps; returns ``(tables, figures)``."""
    analysis = str(result.frame["analysis"].iloc[0])
    tables = write_causal_tables(result, out_dir, analysis)
    return tables, plot_all(result.frame, out_dir, CAUSAL_METRICS[analysis])


def direction_slug(text: str) -> str:
    """A file-name-safe spelling of a direction (``joy+`` -> ``joyp``, ``a+,b-`` -> ``ap_b-``)."""
    return "".join(ch if ch.isalnum() or ch in "_-" else ("p" if ch == "+" else "m" if ch == "-" else "_")
                   for ch in text)


def write_steering(run: SteeringRun, out_dir: str | Path, extra: dict | None = None,
                   directions_meta: dict | None = None) -> tuple[list[Path], list[Path]]:
    """Write a steering run's figures, then its tables, directions and ``summary.json`` (which lists the
    figures by name); returns ``(tables, figures)``."""
    out = Path(out_dir)
    figures = [plot_label_bars(run.table, name, out / f"labels_{direction_slug(name)}.png") for name in run.terms]
    figures.append(plot_dose_response(run.table, out / "dose_response.png"))
    tables = write_steering_tables(run, out, {**(extra or {}), "figures": [f.name for f in figures]},
                                   directions_meta)
    return tables, figures
