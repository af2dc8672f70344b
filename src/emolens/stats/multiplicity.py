"""Permutation p-values and corrections for testing many things at once.

Why here: a p-value means nothing without the null it was computed against and the number of
looks it survived. Three conventions hold across emolens:

* A permutation (or Monte Carlo) p-value is ``(1 + k) / (1 + n)`` where ``k`` of ``n`` null
  draws are at least as extreme as the observation (Phipson & Smyth, 2010): never 0, and exact
  when the observation is exchangeable with the draws.
* Picking the best of several settings (windows, betas, methods, positions) is paid for with the
  max statistic: each null draw contributes its best score over the same settings (single-step
  max-T, Westfall & Young), so the corrected p of the winner is valid for the search.
* Several separate hypotheses (e.g. one per steered direction) are corrected with Holm
  (family-wise) or Benjamini-Hochberg (false discovery rate), through statsmodels -- except
  Holm itself, computed here in closed form (``max.accumulate((m - i) p_(i))``, capped at 1):
  statsmodels' Holm branch calls ``gc.collect()`` on every call, half a second in a process
  holding a model, and the theory tests adjust once per searched setting. The test suite checks
  the closed form against statsmodels.
"""

from __future__ import annotations

import numpy as np
from statsmodels.stats.multitest import multipletests

__all__ = ["adjust", "max_statistic_p", "permutation_p"]

_METHODS = {"holm": "holm", "bonferroni": "bonferroni", "bh": "fdr_bh", "fdr_bh": "fdr_bh", "by": "fdr_by"}


def permutation_p(observed: float, null, alternative: str = "greater") -> float:
    """``(1 + k) / (1 + n)`` over the finite null draws; NaN when either side is missing.

    ``alternative``: ``greater`` counts draws ``>= observed``, ``less`` draws ``<= observed``,
    ``two-sided`` draws with ``|draw| >= |observed|`` (for statistics centred at 0 under the null).
    """
    draws = np.asarray(null, dtype=float).ravel()
    draws = draws[np.isfinite(draws)]
    if not draws.size or not np.isfinite(observed):
        return float("nan")
    if alternative == "greater":
        k = (draws >= observed).sum()
    elif alternative == "less":
        k = (draws <= observed).sum()
    elif alternative == "two-sided":
        k = (np.abs(draws) >= abs(observed)).sum()
    else:
        raise ValueError(f"unknown alternative {alternative!r}; use greater, less or two-sided")
    return float((1 + k) / (1 + draws.size))


def max_statistic_p(observed, null) -> np.ndarray:
    """Max-statistic corrected p-values of ``observed[S]`` settings against ``null[S, n]`` draws.

    Draw ``j`` is one null replicate scored in every setting (the same random direction, the same
    permutation); its maximum over settings is the null of "the best setting scores this high".
    Settings a draw did not reach (NaN) are ignored for that draw; draws missing everywhere are
    dropped. ``p[s] = (1 + #{max_j >= observed[s]}) / (1 + n)``.
    """
    obs = np.asarray(observed, dtype=float).ravel()
    N = np.asarray(null, dtype=float).reshape(len(obs), -1)
    seen = np.isfinite(N).any(0)
    if not seen.any():
        return np.full(len(obs), np.nan)
    best = np.nanmax(N[:, seen], axis=0)
    return np.array([permutation_p(o, best) for o in obs])


def adjust(p_values, method: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values (statsmodels' ``multipletests``); NaNs stay NaN and do not count.

    ``method``: ``holm`` (family-wise error, default), ``bonferroni``, ``bh`` (false discovery rate)
    or ``by``.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown correction {method!r}; use one of {sorted(_METHODS)}")
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any() and method == "holm":
        q = p[ok]
        order = np.argsort(q)
        m = len(q)
        stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
        out[np.flatnonzero(ok)[order]] = stepped
    elif ok.any():
        out[ok] = multipletests(p[ok], method=_METHODS[method])[1]
    return out
