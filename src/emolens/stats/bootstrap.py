"""Item-clustered bootstrap intervals, including for the location of a peak.

Why clustered: emolens measures the same item many times -- patching pairs drawn with
replacement repeat items, a steering condition scores every item once per label, a sweep scores
every item at every window. Rows of one item are not independent, so an interval that treats
them as such (Wilson, a t-interval over rows) is too narrow. Here the resampling unit is the
*cluster* (the item): whole clusters are drawn with replacement and every row of a drawn
cluster comes along.

Why ratio-of-sums: a normalised logit difference averaged per pair is a mean of ratios, heavy-
tailed when a pair's clean margin is small; ``Σ numerator / Σ denominator`` over the same rows is
the stable estimator, and its interval comes from the same cluster bootstrap.

Resampling and BCa go through ``scipy.stats.bootstrap`` applied to cluster indices (its jackknife
for the BCa acceleration then leaves out one whole cluster, as it should).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["Interval", "PeakLocation", "cluster_bootstrap", "cluster_statistic", "peak_location"]

METHODS = ("percentile", "BCa")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval; ``n_clusters`` resampling units, ``n`` rows."""

    value: float
    low: float
    high: float
    n_clusters: int
    n: int
    method: str

    def as_dict(self, prefix: str = "") -> dict[str, float | int | str]:
        return {f"{prefix}value": self.value, f"{prefix}ci_low": self.low, f"{prefix}ci_high": self.high,
                f"{prefix}n_clusters": self.n_clusters, f"{prefix}n": self.n, f"{prefix}ci_method": self.method}


def _cluster_codes(clusters, n: int) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n), n
    c = np.asarray(clusters).ravel()
    if len(c) != n:
        raise ValueError(f"{len(c)} cluster ids for {n} rows")
    _, codes = np.unique(c, return_inverse=True)
    return codes, int(codes.max()) + 1 if n else 0


def _resample(stat_of_idx: Callable[[np.ndarray], np.ndarray], G: int, n_boot: int, level: float, method: str,
              seed: int) -> tuple[float, float]:
    """Interval of ``stat_of_idx`` (cluster index arrays ``[..., G]`` -> values ``[...]``) by scipy."""
    if method not in METHODS:
        raise ValueError(f"unknown bootstrap method {method!r}; use one of {METHODS}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (constant) data: handled below
        res = stats.bootstrap((np.arange(G),), lambda idx, axis=-1: stat_of_idx(idx), vectorized=True,
                              n_resamples=n_boot, confidence_level=level, method=method,
                              rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):  # all resamples equal: the interval is the point
        dist = res.bootstrap_distribution
        lo, hi = float(np.nanmin(dist)), float(np.nanmax(dist))
    return lo, hi


def cluster_bootstrap(values, clusters=None, denominator=None, *, n_boot: int = 2000, level: float = 0.95,
                      method: str = "percentile", seed: int = 0) -> Interval:
    """``Σ values / Σ denominator`` over rows (the mean when ``denominator`` is None) with an
    interval from resampling whole clusters.

    Covers means (``values``), rates (0/1 ``values``), paired differences on shared items
    (``values = a - b`` per row, clustered by item) and ratio-of-sums estimators such as the
    normalised logit difference (``values`` = patched - corrupt, ``denominator`` = clean - corrupt).
    Rows with a non-finite value or denominator are dropped. Fewer than two clusters give a NaN
    interval (nothing to resample).
    """
    x = np.asarray(values, dtype=float).ravel()
    d = np.ones_like(x) if denominator is None else np.asarray(denominator, dtype=float).ravel()
    if d.shape != x.shape:
        raise ValueError(f"{len(d)} denominators for {len(x)} values")
    codes, _ = _cluster_codes(clusters, len(x))
    ok = np.isfinite(x) & np.isfinite(d)
    x, d, codes = x[ok], d[ok], codes[ok]
    _, codes = np.unique(codes, return_inverse=True)
    G = int(codes.max()) + 1 if len(codes) else 0
    num, den = np.bincount(codes, x, G), np.bincount(codes, d, G)
    total = den.sum()
    value = float(num.sum() / total) if total != 0 else float("nan")
    if G < 2 or not np.isfinite(value):
        return Interval(value, float("nan"), float("nan"), G, len(x), method)

    def stat(idx):
        with np.errstate(divide="ignore", invalid="ignore"):
            return num[idx].sum(-1) / den[idx].sum(-1)

    lo, hi = _resample(stat, G, n_boot, level, method, seed)
    return Interval(value, lo, hi, G, len(x), method)


def cluster_statistic(statistic: Callable[[np.ndarray], float], clusters, *, n_boot: int = 1000,
                      level: float = 0.95, method: str = "percentile", seed: int = 0) -> Interval:
    """Any statistic of a set of rows, with a cluster-bootstrap interval.

    ``statistic(rows)`` receives integer row indices (a resample repeats the rows of a cluster
    drawn twice) and returns a float, e.g. a Spearman ρ or an accuracy over those rows.
    """
    codes, G = _cluster_codes(clusters, len(np.asarray(clusters)))
    members = [np.flatnonzero(codes == g) for g in range(G)]
    value = float(statistic(np.arange(len(codes))))
    if G < 2:
        return Interval(value, float("nan"), float("nan"), G, len(codes), method)

    def stat(idx):
        flat = idx.reshape(-1, idx.shape[-1])
        out = np.array([statistic(np.concatenate([members[g] for g in row])) for row in flat], dtype=float)
        return out.reshape(idx.shape[:-1])

    lo, hi = _resample(stat, G, n_boot, level, method, seed)
    return Interval(value, lo, hi, G, len(codes), method)


@dataclass(frozen=True)
class PeakLocation:
    """Where a curve peaks, and how sure: the peak setting, a percentile interval of the peak's
    position over cluster resamples (in the settings' own units, e.g. layers), and the share of
    resamples that peak exactly at the reported setting."""

    peak: float
    low: float
    high: float
    share_at_peak: float
    n_clusters: int
    n_boot: int


def peak_location(values, settings, clusters=None, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                  maximize: bool = True) -> PeakLocation:
    """Bootstrap interval of the *location* of the peak of a mean curve.

    ``values[rows, S]``: one row per measurement (an item, or an item-pair), one column per
    setting (window centre, layer); ``settings[S]`` are the settings' positions (sortable
    numbers). The curve is the column mean; the peak is its argmax (``maximize=False``: argmin).
    Each resample draws whole clusters and takes the argmax of the resampled mean curve; the
    interval is the percentile interval of those argmax positions.
    """
    V = np.asarray(values, dtype=float)
    pos = np.asarray(settings, dtype=float).ravel()
    if V.ndim != 2 or V.shape[1] != len(pos):
        raise ValueError(f"values of shape {V.shape} do not match {len(pos)} settings")
    sign = 1.0 if maximize else -1.0
    codes, G = _cluster_codes(clusters, V.shape[0])
    sums = np.zeros((G, V.shape[1]))
    counts = np.zeros((G, V.shape[1]))
    ok = np.isfinite(V)
    np.add.at(sums, codes, np.where(ok, V, 0.0))
    np.add.at(counts, codes, ok.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = sums.sum(0) / counts.sum(0)
    if not np.isfinite(curve).any():
        return PeakLocation(float("nan"), float("nan"), float("nan"), float("nan"), G, 0)
    peak = float(pos[np.nanargmax(sign * curve)])
    if G < 2:
        return PeakLocation(peak, float("nan"), float("nan"), float("nan"), G, 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, G, size=(n_boot, G))
    w = np.stack([np.bincount(row, minlength=G) for row in idx]).astype(float)  # [B, G]
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (w @ sums) / (w @ counts)
    boot = np.where(np.isfinite(boot), sign * boot, -np.inf)
    where = pos[boot.argmax(1)]
    a = (1 - level) / 2
    lo, hi = np.quantile(where, [a, 1 - a], method="inverted_cdf")
    return PeakLocation(peak, float(lo), float(hi), float((where == peak).mean()), G, n_boot)
