"""Transfer: does model A's emotion probe (and appraisal directions) work on model B's activations?

Why: similar geometry (CKA, RSA) does not yet mean A's *readout* works on B. We fit a ridge map
``B -> A`` on half the items, push B's other half through it, and apply A's emotion probe and
appraisal regressions (fitted on A's first half) to the mapped activations. Transferred accuracy
/ R² near native means the two models carry the same linearly decodable emotion information in
linearly related coordinates; near chance means they do not. Mapping a model onto itself must
give back native performance (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emolens.stats import cluster_bootstrap

__all__ = ["MAP_ALPHAS", "transfer"]

MAP_ALPHAS = np.logspace(-6, 4, 11)


def _probe(x, y):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(x, y)


def _regressor(x, y):
    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 8))).fit(x, y)


def _r2_interval(y: np.ndarray, pred: np.ndarray, seed: int) -> tuple[float, float, float]:
    """Held-out R² and its 95% item-bootstrap interval (resampling test items; the fit is fixed).

    R² = 1 − Σe²/Σ(y − ȳ)² is a ratio of sums over items, so the ratio bootstrap of
    :func:`emolens.stats.cluster_bootstrap` resamples it item-wise, as the sparse probes do.
    """
    ratio = cluster_bootstrap((y - pred) ** 2, denominator=(y - y.mean()) ** 2, n_boot=1000, seed=seed)
    return float(r2_score(y, pred)), 1.0 - ratio.high, 1.0 - ratio.low


def transfer(x_a: np.ndarray, x_b: np.ndarray, labels: Sequence[str], ratings: np.ndarray | None = None,
             appraisal_names: Sequence[str] = (), seed: int = 0) -> list[dict]:
    """Native vs transferred emotion accuracy and appraisal R² for one layer pair (same items in order).

    Rows: ``{"measure": "emotion_accuracy" | "<appraisal>_r2", "native": ..., "transferred": ...,
    "chance": ...}``, each value with a 95% item-bootstrap interval over the test half
    (``*_lo``, ``*_hi``); the split is half/half, stratified by emotion.
    """
    x_a, x_b = np.asarray(x_a, np.float64), np.asarray(x_b, np.float64)
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    fit, test = train_test_split(idx, test_size=0.5, random_state=seed, stratify=labels)
    mapper = make_pipeline(StandardScaler(), RidgeCV(alphas=MAP_ALPHAS)).fit(x_b[fit], x_a[fit])
    mapped = mapper.predict(x_b[test])
    probe = _probe(x_a[fit], labels[fit])
    counts = np.unique(labels[fit], return_counts=True)[1]
    native_hits = (probe.predict(x_a[test]) == labels[test]).astype(float)
    moved_hits = (probe.predict(mapped) == labels[test]).astype(float)
    ci_n = cluster_bootstrap(native_hits, n_boot=1000, seed=seed)
    ci_t = cluster_bootstrap(moved_hits, n_boot=1000, seed=seed)
    rows = [{"measure": "emotion_accuracy", "native": ci_n.value, "native_lo": ci_n.low, "native_hi": ci_n.high,
             "transferred": ci_t.value, "transferred_lo": ci_t.low, "transferred_hi": ci_t.high,
             "chance": float(counts.max() / counts.sum()), "n_fit": len(fit), "n_test": len(test)}]
    if ratings is not None:
        ratings = np.asarray(ratings, np.float64)
        for j, name in enumerate(appraisal_names):
            y = ratings[:, j]
            ok_fit, ok_test = fit[np.isfinite(y[fit])], np.isfinite(y[test])
            reg = _regressor(x_a[ok_fit], y[ok_fit])
            y_test = y[test][ok_test]
            native = _r2_interval(y_test, reg.predict(x_a[test][ok_test]), seed)
            moved = _r2_interval(y_test, reg.predict(mapped[ok_test]), seed)
            rows.append({"measure": f"{name}_r2", "native": native[0], "native_lo": native[1],
                         "native_hi": native[2], "transferred": moved[0], "transferred_lo": moved[1],
                         "transferred_hi": moved[2], "chance": 0.0, "n_fit": len(ok_fit),
                         "n_test": int(ok_test.sum())})
    return rows
