"""Null directions for steering: what "as good as chance" means for an appraisal direction.

Two questions need two nulls (see ``docs/statistics.md``):

* *Does steering along this direction move emotions the way theory says, more than an arbitrary
  push of the same size?* -- compared with **covariance-matched random directions**. Isotropic
  Gaussian directions mostly point outside the residual stream's high-variance subspace and
  barely move anything, so they make any real direction look special. Here a random direction is
  ``Xcᵀ z / √N`` for standard normal item weights ``z`` -- a Gaussian with the activations'
  covariance, i.e. a difference of means between randomly weighted items -- computed with the
  same weights at every layer (a real direction is fitted on the same items at every layer too).
  Steering normalises each direction and matches its norm to the real one's.
* *Does the model carry appraisal information beyond the emotion?* -- compared with directions
  **refitted after permuting the ratings within each emotion**. The permutation keeps each
  emotion's rating distribution (so the emotion geometry that a direction picks up through the
  rating-emotion association is intact) and destroys every link between an item's own rating and
  its activation beyond its emotion. A model that only knows the emotion aligns with theory just
  as well under this null; only appraisal information beyond emotion beats it.

Plus :func:`residualise_on_emotion`: ratings minus their emotion's mean, the targets of a
direction that by construction holds no emotion-mean information. :func:`residualised_banks` fits
the appraisal directions on those residuals (``reference = residualised`` rows of the alignment
table) together with their own emotion-only null: the same fit after permuting the residuals
within each emotion. That null is exact for them: permuting within an emotion commutes with
residualising on it, so under "no appraisal information beyond the emotion" the real residual fit
and its permuted refits are exchangeable.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from emolens.labels import EMOTIONS
from emolens.steering.directions import (
    ConceptBank,
    _ratings_and_labels,
    diffmean_directions,
    pca_directions,
    probe_directions,
)

__all__ = ["RESIDUAL_HIGH", "covariance_random", "emotion_null_banks", "random_by_layer", "residualise_on_emotion",
           "residualised_banks", "within_emotion_permutation", "within_emotion_refits"]

#: Thresholds of a diff-of-means (or PCA) direction on residualised ratings: half a scale point above /
#: below the item's emotion mean. Ratings are integers and emotion means fractional, so this keeps
#: nearly every item that differs from its emotion's mean at all; a full point leaves small fit
#: splits with an empty side.
RESIDUAL_HIGH = 0.5


def covariance_random(X: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` random directions ``[n, L, d]`` with the covariance of the activations ``X[N, L, d]``.

    Direction ``j`` is ``Σ_i z_ij (x_i - mean) / √N`` with ``z ~ N(0, 1)`` seeded by ``seed + j``
    (so direction ``j`` is the same however many are drawn), one set of item weights for all layers.
    """
    Xc = X.double() - X.double().mean(0, keepdim=True)
    N = X.shape[0]
    out = torch.empty(n, *X.shape[1:], dtype=torch.float64)
    for j in range(n):
        z = torch.randn(N, generator=torch.Generator().manual_seed(int(seed) + j), dtype=torch.float64)
        out[j] = torch.einsum("n,nld->ld", z, Xc) / np.sqrt(N)
    return out.float()


def within_emotion_permutation(labels, rng: np.random.Generator) -> np.ndarray:
    """A permutation of item indices that only swaps items sharing a label (unlabelled items -1 stay put
    among themselves, as one group)."""
    y = np.asarray(labels)
    perm = np.arange(len(y))
    for lab in np.unique(y):
        idx = np.flatnonzero(y == lab)
        perm[idx] = idx[rng.permutation(len(idx))]
    return perm


def within_emotion_refits(fit: Callable[[np.ndarray], torch.Tensor], ratings: np.ndarray, labels, n: int,
                          seed: int = 0) -> list[torch.Tensor]:
    """``fit(permuted ratings)`` for ``n`` within-emotion permutations of the rating rows (seeded).

    ``fit`` is the direction method used for the real directions (the same thresholds, the same
    probe), so the null differs from the real fit only in which item carries which rating.
    """
    rng = np.random.default_rng(seed)
    R = np.asarray(ratings)
    return [fit(R[within_emotion_permutation(labels, rng)]) for _ in range(n)]


def residualise_on_emotion(ratings: np.ndarray, labels) -> np.ndarray:
    """Ratings minus the mean rating of the item's emotion (NaN ratings stay NaN; emotion means
    over rated items; unlabelled items -1 form their own group)."""
    R = np.asarray(ratings, dtype=float).copy()
    y = np.asarray(labels)
    for lab in np.unique(y):
        rows = y == lab
        block = R[rows]
        count = np.isfinite(block).sum(0)
        mean = np.divide(np.nansum(block, 0), count, out=np.zeros(block.shape[1]), where=count > 0)
        R[rows] = block - mean
    return R


def random_by_layer(X: torch.Tensor, layers: list[int], n_layers_total: int, n: int, seed: int = 0
                    ) -> dict[int, torch.Tensor]:
    """:func:`covariance_random` directions indexed like ``directions.random_unit``: ``{seed + j: [n_layers_total, d]}``
    (zero at layers outside ``layers``, which no window of the sweep steers)."""
    draws = covariance_random(X, n, seed)
    out = {}
    for j in range(n):
        full = torch.zeros(n_layers_total, X.shape[-1])
        full[list(layers)] = draws[j]
        out[seed + j] = full
    return out


def emotion_null_banks(X: torch.Tensor, layers: list[int], fit_dataset, method: str, n: int, seed: int = 0,
                       appraisals=None) -> list:
    """``n`` concept banks of the appraisals refitted with ``method`` after permuting the fit items'
    ratings within each gold emotion (the emotion-only null; see the module docstring)."""
    names = list(appraisals if appraisals is not None else fit_dataset.appraisal_names)
    R, y = _ratings_and_labels(fit_dataset, names, EMOTIONS)

    def fit(ratings: np.ndarray) -> torch.Tensor:
        if method == "diffmean":
            return diffmean_directions(X, ratings, None)
        if method == "probe":
            return probe_directions(X, ratings, None)
        return pca_directions(X, ratings, seed=seed)

    refits = within_emotion_refits(fit, R, y, n, seed)
    return [ConceptBank(list(layers), names, V, method, {"null": "within-emotion permutation", "perm": j})
            for j, V in enumerate(refits)]


def _refitter(X: torch.Tensor, method: str, seed: int, high: float = 4, low: float = 2) -> Callable:
    def fit(ratings: np.ndarray) -> torch.Tensor:
        if method == "diffmean":
            return diffmean_directions(X, ratings, None, high=high, low=low)
        if method == "probe":
            return probe_directions(X, ratings, None)
        return pca_directions(X, ratings, high=high, low=low, seed=seed)

    return fit


def residualised_banks(X: torch.Tensor, layers: list[int], fit_dataset, method: str, n: int, seed: int = 0,
                       appraisals=None) -> tuple:
    """The appraisal directions fitted with ``method`` on ratings residualised on the gold emotion, and
    ``n`` refits on those residuals permuted within each emotion: ``(bank, [null banks])``.

    A model that knows only the emotion gives the residual fit nothing but noise to fit (each
    emotion's mean residual is 0, so the emotion geometry cancels out of a diff-of-means), and its
    permuted refits are the same kind of noise. Unlabelled items are left out of the fit (their
    "emotion mean" would be that of the unlabelled group, which has no meaning here).
    """
    names = list(appraisals if appraisals is not None else fit_dataset.appraisal_names)
    R, y = _ratings_and_labels(fit_dataset, names, EMOTIONS)
    keep = y >= 0
    resid = residualise_on_emotion(R[keep], y[keep])
    fit = _refitter(X[torch.as_tensor(np.flatnonzero(keep))], method, seed, RESIDUAL_HIGH, -RESIDUAL_HIGH)
    info = {"targets": "ratings residualised on the gold emotion"}
    bank = ConceptBank(list(layers), names, fit(resid), method, info)
    refits = within_emotion_refits(fit, resid, y[keep], n, seed)
    return bank, [ConceptBank(list(layers), names, V, method, {**info, "null": "within-emotion permutation", "perm": j})
                  for j, V in enumerate(refits)]
