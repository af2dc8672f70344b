"""Shared machinery of the causal analyses: conditions with table labels, and tidy metrics.

Ablation (:mod:`emolens.causal.ablation`), patching (:mod:`emolens.causal.patching`) and edge
knockout (:mod:`emolens.causal.knockout`) all do the same thing: score the labels once clean, then
once per *condition* (site x layer window x position x kind), batched over items. The engine's
:class:`~emolens.engine.runner.ConditionRunner` runs that loop -- including the KV-prefix fast path
for edits confined to the last ``m`` positions -- so the three analyses only say how a condition
edits a batch. This module adds what the tables need: which (kind, site, window, position, head) a
condition measures, and the metrics with their intervals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from emolens.causal.curves import PEAKS_FILE, peak_table
from emolens.engine.ops import Op
from emolens.engine.positions import Positions
from emolens.engine.runner import ConditionRunner, path_suffix
from emolens.engine.scoring import LabelScorer
from emolens.engine.windows import Window
from emolens.errors import EmolensError
from emolens.inputs.batching import Batch, iter_batches
from emolens.metrics import wilson_interval
from emolens.paths import dump_json

COLUMNS = ("analysis", "kind", "site", "window_center", "window_span", "layers", "position", "head", "metric",
           "value", "ci_low", "ci_high", "n", "model")
Position = int | str | tuple[int, ...]


def position_label(position: Position) -> str:
    return Positions.of(position).label


def suffix_len(position: Position, fast: bool = True) -> int:
    """How many last tokens a condition at this position must run (0: full forwards; always 0 without ``fast``)."""
    return Positions.of(position).suffix if fast else 0


def reference_path(paths) -> str:
    """The path of the clean reference row: the shortest suffix, else full forwards."""
    return min(paths, key=lambda p: (path_suffix(p) == 0, path_suffix(p)))


def int_positions(position: Position) -> list[int] | None:
    pos = Positions.of(position)
    return list(pos.ints) if pos.is_index else None


def make_batches(lm, prompts, batch_size: int) -> list[Batch]:
    """Length-sorted, pre-encoded batches reused by every condition (``indices`` = prompt positions)."""
    return list(iter_batches(lm.tokenizer, prompts, batch_size, lm.device))


@dataclass
class Condition:
    """One measured edit: its labels for the table and how it edits a batch.

    ``build(batch)`` returns the ops for that batch; ``suffix`` is the number of last tokens the
    edit is confined to (0: full forwards). A :class:`~emolens.engine.runner.ConditionRunner`
    runs it like any other condition.
    """

    kind: str
    site: str
    window: Window | None
    position: Position
    head: int | None
    build: Callable[[Batch], Sequence[Op]]
    suffix: int = 0


def proportion(hits: np.ndarray) -> tuple[float, float, float, int]:
    """Mean of a boolean array with its 95% Wilson interval."""
    hits = np.asarray(hits, bool)
    n = int(hits.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    low, high = wilson_interval(int(hits.sum()), n)
    return float(hits.mean()), low, high, n


def mean_ci(values: np.ndarray) -> tuple[float, float, float, int]:
    """Mean with a 95% t interval (a mean change is near-normal at the n we run)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    n = int(values.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(values.mean())
    if n == 1:
        return mean, float("nan"), float("nan"), 1
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half, n


def row(analysis: str, cond: Condition | None, metric: str, stat: tuple, model: str) -> dict:
    """One tidy row; a ``None`` condition is the clean reference."""
    window = cond.window if cond is not None else None
    return {"analysis": analysis, "kind": cond.kind if cond else "clean", "site": cond.site if cond else "none",
            "window_center": window.center if window else -1, "window_span": window.span if window else 0,
            "layers": window.label if window else "", "position": position_label(cond.position) if cond else "",
            "head": cond.head if cond is not None else None, "metric": metric, "value": stat[0],
            "ci_low": stat[1], "ci_high": stat[2], "n": stat[3], "model": model}


def to_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["head"] = frame["head"].astype("Int64")
    frame["n"] = frame["n"].astype("int64")
    return frame


def prediction_metrics(analysis: str, cond: Condition | None, scores: np.ndarray, clean: np.ndarray,
                       gold: np.ndarray, model: str) -> list[dict]:
    """Agreement with the clean prediction, accuracy, and the mean change in the gold log-prob."""
    pred, clean_pred = scores.argmax(1), clean.argmax(1)
    has = gold >= 0
    rows_ = [row(analysis, cond, "agreement", proportion(pred == clean_pred), model),
             row(analysis, cond, "accuracy", proportion(pred[has] == gold[has]), model)]
    delta = scores[has, gold[has]] - clean[has, gold[has]]
    rows_.append(row(analysis, cond, "delta_logp_gold", mean_ci(delta), model))
    return rows_


@dataclass
class CausalResult:
    """A tidy table (one row per measurement), per-condition label scores, and run facts."""

    frame: pd.DataFrame
    clean_scores: np.ndarray
    scores: list[np.ndarray]
    conditions: list[Condition]
    ids: list[str]
    info: dict = dataclasses.field(default_factory=dict)
    pairs: pd.DataFrame | None = None


#: The table file of each analysis (written by :func:`write_outputs`, for the CLI and the study alike).
TABLE_FILES = {"ablation": "ablation.parquet", "patching": "patching.parquet", "knockout": "knockout.parquet"}


def write_outputs(result: CausalResult, out_dir: str | Path, analysis: str) -> list[Path]:
    """Write a causal result: ``<analysis>.parquet`` (tidy), ``pairs.parquet`` (patching), ``peaks.parquet``
    (each curve's peak window with its location interval and max-statistic p, :mod:`emolens.causal.curves`)
    and ``info.json``.

    ``emolens ablate | patch | knockout`` and the study's stages both write through here, so their
    files are the same. ``head`` is stored as float (NaN: all heads), which every reader round-trips.
    """
    out = Path(out_dir)
    frame = result.frame.copy()
    frame["head"] = frame["head"].astype("float64")
    written = [out / TABLE_FILES[analysis]]
    frame.to_parquet(written[0], index=False)
    if result.pairs is not None:
        result.pairs.to_parquet(out / "pairs.parquet", index=False)
        written.append(out / "pairs.parquet")
    peaks = peak_table(result, analysis)
    peaks.to_parquet(out / PEAKS_FILE, index=False)
    written.append(out / PEAKS_FILE)
    dump_json(out / "info.json", result.info)
    return written


def gold_index(labels: Sequence[str | None], names: Sequence[str]) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(names)}
    return np.array([index.get(lab, -1) if lab is not None else -1 for lab in labels], dtype=np.int64)


def runner_for(lm, prompts, spec, fast: bool = True) -> ConditionRunner:
    """The condition runner of an analysis, scoring ``spec``'s labels as they follow these prompts.

    ``fast=False`` is the naive path every fast path is tested against: one condition per forward,
    every layer run (the analyses also skip the KV prefix then, and with it the shared template tokens).
    """
    if not prompts:
        raise EmolensError("no items to analyse")
    scorer = LabelScorer.build(lm.tokenizer, spec.labels, prompts[0].text, prompts[0].label_prefix)
    runner = ConditionRunner(lm, scorer, skip=fast, stack_rows=None if fast else 0)
    if fast:  # each batch's clean prefix then runs only the columns after the template's shared tokens
        runner.share_prefix(prompts)
    return runner
