"""From correlations to findings: p-values, Benjamini-Hochberg q-values and Fisher-z intervals.

Why a separate module: the streaming pass only knows sums; what counts as "a neuron that encodes
pleasantness" is decided here, once, for every caller. A neuron-level claim is one test among
hundreds of thousands, so q-values control the false discovery rate across all neurons of all
layers for one appraisal (the family a reader scans when asking "which neurons carry X?").
The interval is Fisher's z: ``atanh(r) ± z_{α/2} / sqrt(n − 3 − k)`` with ``k`` covariates
partialled out (0 for plain r).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from emolens.stats import adjust

__all__ = ["correlation_p", "fisher_interval", "bh_by_target"]


def correlation_p(r, n: int, k: int = 0) -> np.ndarray:
    """Two-sided p of a (partial) correlation: ``t = r·sqrt(df / (1 − r²))`` on ``df = n − 2 − k``."""
    r = np.asarray(r, dtype=float)
    df = n - 2 - k
    if df < 1:
        return np.full(r.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt(df / np.maximum(1.0 - r**2, 1e-300))
    return 2.0 * sps.t.sf(np.abs(t), df)


def fisher_interval(r, n: int, k: int = 0, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Fisher-z interval of a (partial) correlation from ``n`` items with ``k`` covariates removed."""
    r = np.asarray(r, dtype=float)
    if n - 3 - k < 1:
        nan = np.full(r.shape, np.nan)
        return nan, nan
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    half = sps.norm.ppf(0.5 + level / 2) / np.sqrt(n - 3 - k)
    return np.tanh(z - half), np.tanh(z + half)


def bh_by_target(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of ``p [L, N, A]`` across all neurons, separately per target ``A``."""
    p = np.asarray(p, dtype=float)
    q = np.empty_like(p)
    for a in range(p.shape[-1]):
        q[..., a] = adjust(p[..., a].ravel(), "bh").reshape(p.shape[:-1])
    return q
