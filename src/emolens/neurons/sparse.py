"""Sparse probes: how much of an appraisal's held-out R² the k most correlated neurons carry.

Why top-k rather than only the dense probe: "neuron 812 encodes pleasantness" is a claim about a
few coordinates; the R²-versus-k curve says whether a handful of neurons carry most of what the
whole layer carries (sparse code) or whether it is spread thin (k must approach the layer width).
Neurons are ranked by ``|r|`` on the *training* split only and the ridge penalty is chosen by
efficient leave-one-out on the training split (``RidgeCV``), so the held-out R² carries no
selection bias; under a null where no neuron relates to the rating it sits at or below 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emolens.neurons.collect import NeuronPass
from emolens.stats import cluster_bootstrap

__all__ = ["default_ks", "item_split", "sparse_curve", "sparse_table", "train_ranking"]

ALPHAS = np.logspace(-2, 5, 8)


def default_ks(width: int) -> list[int]:
    """1, 2, 4, ... up to the layer width (which is the dense probe)."""
    ks = [1]
    while ks[-1] * 2 < width:
        ks.append(ks[-1] * 2)
    return ks


def item_split(groups: np.ndarray, test_size: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train/test positions stratified by emotion (unstratified where a class has one item or the
    test split is smaller than the number of classes)."""
    idx = np.arange(len(groups))
    counts = np.bincount(groups)
    present = counts[counts > 0]
    n_test = int(np.ceil(test_size * len(groups)))
    strat = groups if present.min() >= 2 and n_test >= len(present) else None
    train, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=strat)
    return np.sort(train), np.sort(test)


def train_ranking(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Neuron indices by decreasing ``|r|`` with ``y`` on the rows given (constant neurons last)."""
    xc, yc = X - X.mean(0), y - y.mean()
    sx = np.sqrt((xc**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc[:, None]).sum(0) / (sx * np.sqrt((yc**2).sum()))
    return np.argsort(-np.nan_to_num(np.abs(r), nan=-1.0), kind="stable")


def _fit_r2(Xtr, ytr, Xte, yte, seed: int = 0) -> dict:
    """Held-out R² with a 95% bootstrap interval over test items.

    Why an interval: with a few hundred held-out items R² moves by several hundredths between
    splits, so a curve of R² against k needs its noise band before one k is called better than
    another. R² = 1 − Σe²/Σ(y − ȳ)² is a ratio of sums over test items, resampled item-wise
    (ȳ kept at the test mean); the probe itself is not refitted, so the band is the test-set
    noise only (training noise would widen it).
    """
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)).fit(Xtr, ytr)
    pred = model.predict(Xte)
    ratio = cluster_bootstrap((yte - pred) ** 2, denominator=(yte - yte.mean()) ** 2, n_boot=1000, seed=seed)
    return {"r2": float(r2_score(yte, pred)), "r2_lo": 1.0 - ratio.high, "r2_hi": 1.0 - ratio.low}


def sparse_curve(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                 ks: Sequence[int] | None = None) -> pd.DataFrame:
    """Held-out R² of ridge probes on the top-k train-ranked neurons, plus the dense probe (all neurons)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    order = train_ranking(X[train], y[train])
    width = X.shape[1]
    rows = []
    for k in sorted({int(k) for k in (ks or default_ks(width)) if 0 < int(k) < width}):
        cols = order[:k]
        rows.append({"kind": "top-k", "k": k, **_fit_r2(X[train][:, cols], y[train], X[test][:, cols], y[test])})
    rows.append({"kind": "dense", "k": width, **_fit_r2(X[train], y[train], X[test], y[test])})
    frame = pd.DataFrame(rows)
    frame["n_train"], frame["n_test"] = len(train), len(test)
    return frame


def sparse_table(result: NeuronPass, ks: Sequence[int] | None = None, test_size: float = 0.25,
                 seed: int = 0) -> pd.DataFrame:
    """R² versus k for every appraisal at every kept layer of a :class:`NeuronPass`."""
    ratings = result.ratings
    train, test = item_split(result.groups, test_size, seed)
    frames = []
    for layer, X in sorted(result.kept.items()):
        for a, name in enumerate(result.appraisals):
            frame = sparse_curve(X, ratings[:, a], train, test, ks)
            frame.insert(0, "appraisal", name)
            frame.insert(0, "layer", layer)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["layer", "appraisal", "kind", "k", "r2", "r2_lo", "r2_hi", "n_train", "n_test"])
