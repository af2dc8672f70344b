"""Item-clustered bootstrap intervals for the control study, and agreement between judges.

Every condition of the control study replies once to each message, so the message is the unit
that repeats across conditions: a paired difference (steered minus clean on the same message)
is one value per message, and resampling messages is the clustered bootstrap. Kept local and
small because the project's ``emolens.stats`` package had not landed when this study was
written; it should move onto ``emolens.stats.cluster_bootstrap`` once that is on main.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

__all__ = ["agreement", "item_interval"]


def item_interval(values, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-item ``values`` and its percentile bootstrap interval over items (NaNs dropped).

    Fewer than two finite values give a NaN interval: no interval is better than a fake one.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size < 2:
        return float(x.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(1)
    alpha = (1 - level) / 2
    return float(x.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def agreement(frame: pd.DataFrame, pairs: Sequence[tuple[str, str]], cluster: str = "id", n_boot: int = 500,
              level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Spearman correlation between two judges' columns across replies, with an item-clustered interval.

    A message contributes all its replies (one per condition) together to each resample, so
    replies to the same message are never treated as independent. Columns: ``judge_a``,
    ``judge_b``, ``spearman``, ``ci_low``, ``ci_high``, ``n`` (replies), ``n_items``.
    """
    rows = []
    codes, uniques = pd.factorize(frame[cluster])
    members = [np.flatnonzero(codes == g) for g in range(len(uniques))]
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    for a, b in pairs:
        x, y = frame[a].to_numpy(float), frame[b].to_numpy(float)
        rho = _spearman(x, y)
        boots = []
        for _ in range(n_boot if len(members) > 1 else 0):
            idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
            boots.append(_spearman(x[idx], y[idx]))
        boots = np.asarray([v for v in boots if np.isfinite(v)])
        lo, hi = (np.quantile(boots, alpha), np.quantile(boots, 1 - alpha)) if boots.size else (np.nan, np.nan)
        rows.append({"judge_a": a, "judge_b": b, "spearman": rho, "ci_low": float(lo), "ci_high": float(hi),
                     "n": len(frame), "n_items": len(members)})
    return pd.DataFrame(rows, columns=["judge_a", "judge_b", "spearman", "ci_low", "ci_high", "n", "n_items"])
