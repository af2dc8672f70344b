"""The neuron table: one row per (layer, neuron, appraisal) with r, partial r, q-values, rank, interval.

Why a tidy long table: figures, the report and users' own notebooks filter it the same way
(``q < 0.05``, ``rank <= 10``). ``rank`` orders all neurons of all layers within an appraisal by
``|r|`` (1 = strongest); ``q`` and ``partial_q`` are Benjamini-Hochberg across those same neurons.
The interval (``ci_lo``, ``ci_hi``) is Fisher's z for r; ``partial_ci_*`` likewise with the
emotion covariates counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emolens.neurons.collect import NeuronPass
from emolens.neurons.significance import bh_by_target, correlation_p, fisher_interval

__all__ = ["neuron_table", "significant_counts"]


def neuron_table(result: NeuronPass, level: float = 0.95) -> pd.DataFrame:
    """Tidy per-neuron statistics of a :class:`NeuronPass`."""
    m = result.moments
    r, pr = m.correlations(), m.partial_correlations()
    k = m.n_covariates
    p, pp = correlation_p(r, m.n), correlation_p(pr, m.n, k)
    q, pq = bh_by_target(p), bh_by_target(pp)
    lo, hi = fisher_interval(r, m.n, level=level)
    plo, phi = fisher_interval(pr, m.n, k, level=level)
    L, N, A = r.shape
    strength = np.where(np.isfinite(r), np.abs(r), -1.0).reshape(L * N, A)
    order = np.argsort(-strength, axis=0, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, L * N + 1)[:, None].repeat(A, 1), axis=0)
    layer = np.repeat(np.asarray(result.layers), N * A)
    neuron = np.tile(np.repeat(np.arange(N), A), L)
    appraisal = np.tile(np.asarray(result.appraisals, dtype=object), L * N)
    frame = pd.DataFrame({
        "layer": layer.astype(np.int32), "neuron": neuron.astype(np.int32),
        "appraisal": pd.Categorical(appraisal, categories=list(result.appraisals)),
        "r": r.ravel(), "p": p.ravel(), "q": q.ravel(), "ci_lo": lo.ravel(), "ci_hi": hi.ravel(),
        "partial_r": pr.ravel(), "partial_p": pp.ravel(), "partial_q": pq.ravel(),
        "partial_ci_lo": plo.ravel(), "partial_ci_hi": phi.ravel(),
        "rank": rank.reshape(L, N, A).ravel().astype(np.int32),
        "mean": np.repeat(m.mean.ravel(), A), "var": np.repeat(m.var.ravel(), A),
    })
    frame.attrs.update(n_items=int(m.n), n_covariates=int(k))
    return frame


def significant_counts(table: pd.DataFrame, alpha: float = 0.05, column: str = "q") -> pd.DataFrame:
    """Neurons with ``column < alpha`` per layer x appraisal (a wide ``layer`` x ``appraisal`` table)."""
    hits = table[table[column] < alpha]
    counts = hits.groupby(["layer", "appraisal"], observed=False).size().unstack("appraisal", fill_value=0)
    layers = sorted(table["layer"].unique())
    return counts.reindex(index=layers, fill_value=0)
