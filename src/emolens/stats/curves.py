"""Where a curve over settings peaks, and whether that peak beats a null after searching for it.

A causal curve (damage per layer window, transfer per layer window) is read for its *peak*: the
window where ablating hurts most, where patching moves the source's emotion most. Two things make
a bare argmax over-confident, and this module answers both:

* **Where** -- the argmax of a noisy curve moves between resamples of the items. Its uncertainty
  is the bootstrap interval of the peak's *location* (:func:`emolens.stats.peak_location`, whole
  items resampled).
* **Whether** -- the peak is the best of every window, site, position and kind that was searched,
  so its p-value must pay for the search. Every null draw is applied to *all* searched settings
  at once (the same sign flips of the same items, the same shuffle of donors) and contributes its
  maximum over them: the single-step max statistic (Westfall & Young), valid for the search.

:func:`sign_flip_null` draws the null "each item's effect is as likely negative as positive"
(exact when per-item effects are symmetric about zero under H0, e.g. a paired difference between
two interventions that are exchangeable under H0).

Why standardised: sites differ in scale (zeroing the residual stream moves log-probabilities by
tens of nats, zeroing an MLP output by a few), so the maximum of raw means over settings is
decided by the noisiest site, and a clear peak elsewhere is corrected away. :func:`peak_p_values`
therefore compares settings on ``(statistic - null mean) / null SD``, both taken over that
setting's own null draws (Westfall & Young's standardised max-T), which leaves each setting's
own test unchanged and lets every setting compete on the same footing. (For a sign-flip null the
null SD is a fixed function of the data, ``sqrt(Σ cluster sums²) / n``: the self-normalised sum.)
Where a null's spread grows with the effect itself (patching's donor shuffle: a strong transfer
also moves the target towards shuffled donors' labels) standardising costs power, and the settings
already share units, so the caller may compare raw statistics (``standardised=False``).
"""

from __future__ import annotations

import numpy as np

from emolens.stats.multiplicity import max_statistic_p, permutation_p

__all__ = ["column_means", "peak_p_values", "sign_flip_null", "standardise"]


def column_means(V: np.ndarray) -> np.ndarray:
    """Mean of every column over its finite rows (NaN where a column has none)."""
    V = np.asarray(V, dtype=float)
    ok = np.isfinite(V)
    n = ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, V, 0.0).sum(0) / np.maximum(n, 1), np.nan)


def sign_flip_null(V: np.ndarray, clusters=None, *, n_draws: int = 999, seed: int = 0) -> np.ndarray:
    """Column means of ``V[rows, S]`` under ``n_draws`` random sign flips of whole clusters: ``[S, n_draws]``.

    Rows of one cluster (an item measured in several rows) flip together, so the null respects how
    items repeat; one draw flips the same clusters in every column, so a draw's maximum over the
    columns is the null of the best setting. NaN cells are left out of their column's mean.
    """
    V = np.asarray(V, dtype=float)
    if V.ndim != 2:
        raise ValueError(f"expected a [rows, settings] matrix, got shape {V.shape}")
    codes = np.arange(V.shape[0]) if clusters is None else np.unique(np.asarray(clusters), return_inverse=True)[1]
    G = int(codes.max()) + 1 if len(codes) else 0
    ok = np.isfinite(V)
    sums = np.zeros((G, V.shape[1]))
    np.add.at(sums, codes, np.where(ok, V, 0.0))
    counts = ok.sum(0).astype(float)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_draws, G))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (signs @ sums) / np.where(counts > 0, counts, np.nan)
    return means.T


def standardise(observed: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x - m_s) / sd_s`` of ``observed[S]`` and ``null[S, n]`` with each setting's null mean and SD
    (a setting whose null does not vary keeps SD 1)."""
    N = np.asarray(null, dtype=float)
    with np.errstate(invalid="ignore"):
        m = np.nanmean(N, 1, keepdims=True) if N.shape[1] else np.zeros((len(N), 1))
        sd = np.nanstd(N, 1, keepdims=True) if N.shape[1] else np.ones((len(N), 1))
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
    m = np.where(np.isfinite(m), m, 0.0)
    return (np.asarray(observed, dtype=float) - m[:, 0]) / sd[:, 0], (N - m) / sd


def peak_p_values(observed: np.ndarray, null: np.ndarray, peak: int, standardised: bool = True
                  ) -> tuple[float, float]:
    """(max-statistic corrected p, uncorrected p) of setting ``peak`` among ``observed[S]`` with ``null[S, n]``;
    the correction is over the standardised statistics (:func:`standardise`) unless ``standardised=False``."""
    z_obs, z_null = standardise(observed, null) if standardised else (observed, null)
    corrected = max_statistic_p(z_obs, z_null)[peak]
    return float(corrected), permutation_p(float(np.asarray(observed)[peak]), np.asarray(null)[peak])
