"""Item-clustered intervals for the control study, and agreement between judges.

Every condition of the control study replies once to each message, so the message is the unit
that repeats across conditions: a paired difference (steered minus clean on the same message)
is one value per message, and a correlation across all replies must resample whole messages.
Both go through :mod:`emolens.stats` (one definition of "interval" for the project); this module
only shapes them into the study's tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from emolens.stats import cluster_bootstrap, cluster_statistic

__all__ = ["agreement", "item_interval"]


def item_interval(values, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-item ``values`` and its percentile bootstrap interval over items (NaNs dropped).

    Fewer than two finite values give a NaN interval: no interval is better than a fake one.
    """
    iv = cluster_bootstrap(values, n_boot=n_boot, level=level, seed=seed)
    return iv.value, iv.low, iv.high


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def agreement(frame: pd.DataFrame, pairs: Sequence[tuple[str, str]], cluster: str = "id", n_boot: int = 500,
              level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Spearman correlation between two judges' columns across replies, with an item-clustered interval.

    A message contributes all its replies (one per condition) together to each resample, so
    replies to the same message are never treated as independent. Columns: ``judge_a``,
    ``judge_b``, ``spearman``, ``ci_low``, ``ci_high``, ``n`` (replies), ``n_items``. A judge
    that gives every reply the same score has no rank correlation (NaN), not a zero one.
    """
    rows = []
    clusters = frame[cluster].to_numpy()
    for a, b in pairs:
        x, y = frame[a].to_numpy(float), frame[b].to_numpy(float)
        if np.isfinite(_spearman(x, y)):
            iv = cluster_statistic(lambda idx, x=x, y=y: _spearman(x[idx], y[idx]), clusters, n_boot=n_boot,
                                   level=level, seed=seed)
            rho, lo, hi = iv.value, iv.low, iv.high
        else:
            rho = lo = hi = float("nan")
        rows.append({"judge_a": a, "judge_b": b, "spearman": rho, "ci_low": lo, "ci_high": hi,
                     "n": len(frame), "n_items": int(pd.Series(clusters).nunique())})
    return pd.DataFrame(rows, columns=["judge_a", "judge_b", "spearman", "ci_low", "ci_high", "n", "n_items"])
