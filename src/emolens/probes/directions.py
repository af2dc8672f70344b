"""Concept directions from activations: the one fitter that probing and steering share.

A direction says where a concept lies in activation space. Two kinds, per slice (a site, layer
and position) and concept:

* ``diffmean``: the mean of the items that have the concept minus the mean of those that do not
  -- an emotion's class against every other labelled item, an appraisal's items rated ``>= high``
  against those rated ``<= low``;
* ``probe``: the weights of a probe -- multinomial logistic regression for emotions, ridge
  regression for appraisals (the paper's directions).

**Missing values, one rule.** An item without an emotion label (``-1``) or without a rating of an
appraisal (NaN) is left out of that concept's direction only: it is on neither side of a
difference of means and not among the items its probe is fitted on; every other concept still
uses it. A direction that cannot be estimated -- an empty side, fewer than
:data:`MIN_ITEMS` labelled or rated items -- is NaN, an explicit "undefined" rather than a zero
vector that would steer nowhere, and callers skip or refuse it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emolens.errors import EmolensError
from emolens.labels import EMOTIONS
from emolens.probes.logistic import fit_logistic
from emolens.probes.ridge import fit_ridge

#: Fewest labelled (emotion) or rated (appraisal) items a probe direction is fitted on.
MIN_ITEMS = 3

__all__ = ["MIN_ITEMS", "class_diffmeans", "fit_directions"]


def class_diffmeans(X: torch.Tensor, member: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``mean(x | member_k) - mean(x | other_k)`` per slice and group: ``[S, G, d]``.

    ``member``/``other`` are ``[n, G]`` 0/1 masks; a group with an empty side gets NaN.
    """
    m, o = member.to(X), other.to(X)
    cm, co = m.sum(0), o.sum(0)
    mean_m = torch.einsum("ng,snd->sgd", m, X) / cm.clamp_min(1)[None, :, None]
    mean_o = torch.einsum("ng,snd->sgd", o, X) / co.clamp_min(1)[None, :, None]
    out = mean_m - mean_o
    out[:, (cm == 0) | (co == 0)] = torch.nan
    return out


def _slices(X: torch.Tensor, chunk: int | None):
    step = X.shape[0] if not chunk else max(1, int(chunk))
    for s0 in range(0, X.shape[0], step):
        yield X[s0:s0 + step]


def fit_directions(X, labels=None, ratings=None, *, methods: Sequence[str] = ("diffmean", "probe"),
                   n_classes: int = len(EMOTIONS), high: float = 4, low: float = 2, C: float = 1.0,
                   alpha: float | str | Sequence[float] = 5.0, standardize: bool = False,
                   device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                   slice_chunk: int | None = None, max_iter: int = 1000, fits: dict | None = None
                   ) -> dict[str, torch.Tensor]:
    """Directions of every emotion and appraisal on every slice of ``X [S, n, d]`` (see the module doc).

    ``labels`` are ``[n]`` class ids (``-1``: no label); ``ratings`` are ``[n, A]`` (NaN: not
    rated). Keys: ``emotion/diffmean``, ``emotion/probe`` (``[S, K, d]``), ``appraisal/diffmean``,
    ``appraisal/probe`` (``[S, A, d]``), for the ``methods`` asked and the inputs given. The probe
    options (``C``, ``alpha``, ``standardize``, ``device``, ``dtype``, ``slice_chunk``,
    ``max_iter``) go to :func:`~emolens.probes.estimators.fit_logistic` /
    :func:`~emolens.probes.estimators.fit_ridge`; directions come back in ``dtype`` (differences
    of means are accumulated in float64 first). ``fits`` (a dict) receives the emotion probe's fit
    under ``"emotion"`` (its convergence).
    """
    unknown = [m for m in methods if m not in ("diffmean", "probe")]
    if unknown:
        raise EmolensError(f"unknown direction method(s) {unknown}: use diffmean and/or probe")
    if labels is None and ratings is None:
        raise EmolensError("directions need emotion labels and/or appraisal ratings")
    X = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
    if X.ndim != 3:
        raise EmolensError(f"activations must be [slices, items, width], got shape {tuple(X.shape)}")
    S, n, d = X.shape
    out: dict[str, torch.Tensor] = {}
    if labels is not None:
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if y.shape != (n,) or bool((y >= n_classes).any()):
            raise EmolensError(f"labels must be [{n}] class ids below {n_classes} (-1: no label)")
        keep = y >= 0
        if "diffmean" in methods:
            member = torch.nn.functional.one_hot(y.clamp_min(0), n_classes) * keep[:, None]
            other = (1 - member) * keep[:, None]
            out["emotion/diffmean"] = torch.cat([class_diffmeans(x.double(), member, other).to(dtype)
                                                 for x in _slices(X, slice_chunk)])
        if "probe" in methods:
            if int(keep.sum()) >= MIN_ITEMS and len(y[keep].unique()) >= 2:
                fit = fit_logistic(X[:, keep], y[keep], C=C, n_classes=n_classes, standardize=standardize,
                                   device=device, dtype=dtype, slice_chunk=slice_chunk, max_iter=max_iter)
                out["emotion/probe"] = fit.coef.to(dtype)
                if fits is not None:
                    fits["emotion"] = fit
            else:
                out["emotion/probe"] = torch.full((S, n_classes, d), float("nan"), dtype=dtype)
    if ratings is not None:
        R = torch.as_tensor(np.asarray(ratings, dtype=np.float64))
        if R.ndim != 2 or R.shape[0] != n:
            raise EmolensError(f"ratings must be [{n}, appraisals], got shape {tuple(R.shape)}")
        if "diffmean" in methods:
            member, other = torch.ge(R, high).long(), torch.le(R, low).long()  # NaN is neither
            out["appraisal/diffmean"] = torch.cat([class_diffmeans(x.double(), member, other).to(dtype)
                                                   for x in _slices(X, slice_chunk)])
        if "probe" in methods:
            W = torch.full((S, R.shape[1], d), float("nan"), dtype=dtype)
            rated = torch.isfinite(R)
            patterns: dict[bytes, list[int]] = {}  # appraisals rated by the same items share one fit
            for j in range(R.shape[1]):
                patterns.setdefault(rated[:, j].numpy().tobytes(), []).append(j)
            for cols in patterns.values():
                keep = rated[:, cols[0]]
                if int(keep.sum()) < MIN_ITEMS:
                    continue
                fit = fit_ridge(X[:, keep], R[keep][:, cols], alpha=alpha, standardize=standardize, device=device,
                                dtype=dtype, slice_chunk=slice_chunk)
                W[:, cols] = fit.coef.reshape(S, len(cols), d).to(dtype)
            out["appraisal/probe"] = W
    return out
