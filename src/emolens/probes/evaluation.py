"""Probe protocols, metrics with intervals, controls and directions over a stack of slices.

The paper reports one held-out accuracy per slice from a single non-stratified 80/20 split, with
no interval and no control (paper-protocol §5, §10.3). This module evaluates the same batched
probes (:mod:`emolens.probes.estimators`) under two protocols and always reports *how sure* and *against what*:

``protocol="paper"``
    80/20 split with seed 42, not stratified. The split is the one
    ``sklearn.model_selection.train_test_split(arange(n), test_size=0.2, random_state=42)`` makes
    (a ``RandomState(42)`` permutation, first ``ceil(0.2 n)`` items tested), so it reproduces
    the paper's partition; C=1 and alpha=5 are the defaults. Intervals: bootstrap over test items.
``protocol="cv"`` (the default of these functions; ``emolens probe`` and the study default to ``paper``)
    Stratified k-fold (k=5, shuffled with the seed; plain k-fold for regression unless ``strata``
    is given). By default (``ci="auto"`` = ``"corrected"`` under CV) the value is the mean of the k
    fold metrics with the **Nadeau-Bengio corrected t interval**: variance ``(1/k + n_test/n_train)
    · s²`` over the fold metrics instead of the naive ``s²/k``. Why: the k fold estimates share
    training items, so their spread understates how much the score moves with the training set; the
    naive t interval (``ci="folds"``) and a bootstrap of the pooled out-of-fold predictions
    (``ci="bootstrap"``: every item predicted once, resampled, the fitted probes held fixed) both
    leave that variance out. ``tests/test_cv_intervals.py`` measures the coverage of all three on
    simulated data where the true expected accuracy is known (``docs/statistics.md``).

Every result is a tidy frame with the columns :data:`COLUMNS`, one row per measurement; ``chance``
is the value an uninformed predictor gets (majority share for accuracy, ``1/K`` for balanced
accuracy, the uniform guesser's expected macro-F1, 0 for R² and correlations, the target
variance for MSE). Items with label ``-1``/NaN are an error unless ``drop_invalid=True``, in which
case they are removed and ``n`` says how many items were used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.model_selection import KFold, StratifiedKFold

from emolens.errors import EmolensError
from emolens.labels import EMOTIONS, PAPER_APPRAISALS
from emolens.probes import estimators as probes

#: The columns of every result frame, in order.
COLUMNS: tuple[str, ...] = ("task", "target", "site", "layer", "position", "metric", "value",
                            "ci_low", "ci_high", "n", "chance")
CLASSIFICATION_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1")
REGRESSION_METRICS: tuple[str, ...] = ("r2", "pearson", "spearman", "mse")

Slice = tuple[str, int, int]  # (site, layer, position)


# ----------------------------------------------------------------------------------------------
# splits


def splits(n: int, protocol: str = "cv", *, strata: np.ndarray | None = None, k: int = 5, seed: int = 42,
           test_size: float = 0.2) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` index pairs for a protocol (see the module docstring)."""
    if protocol == "paper":
        n_test = math.ceil(test_size * n)
        perm = np.random.RandomState(seed).permutation(n)
        return [(perm[n_test:], perm[:n_test])]
    if protocol == "cv":
        if strata is not None:
            return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), strata))
        return list(KFold(k, shuffle=True, random_state=seed).split(np.zeros(n)))
    raise EmolensError(f"unknown protocol {protocol!r}", "use 'paper' or 'cv'")


# ----------------------------------------------------------------------------------------------
# metrics: point values and weighted (bootstrap) versions share one implementation


def _boot_weights(n: int, n_boot: int, seed: int) -> torch.Tensor:
    """Bootstrap resamples as multiplicity counts ``[B, n]`` (row 0 is the plain sample)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=g)
    ones = torch.ones(n_boot, n, dtype=torch.float64)
    w = torch.zeros(n_boot, n, dtype=torch.float64).scatter_add_(1, idx, ones)
    return torch.cat([torch.ones(1, n, dtype=torch.float64), w])


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                          weights: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and macro-F1 of ``y_pred [S, n]`` against ``y_true [n]``.

    With ``weights [B, n]`` (item multiplicities) the result is ``[S, B]``, else ``[S]``.
    Definitions follow ``sklearn.metrics``: balanced accuracy averages recall over classes present
    in ``y_true``; macro-F1 averages F1 over classes present in ``y_true`` or ``y_pred``.
    """
    yt = torch.as_tensor(np.asarray(y_true)).long()
    yp = torch.as_tensor(np.asarray(y_pred)).long()
    single = weights is None
    w = torch.ones(1, yt.numel(), dtype=torch.float64) if single else weights
    T = torch.nn.functional.one_hot(yt, n_classes).double()  # [n, K]
    P = torch.nn.functional.one_hot(yp, n_classes).double()  # [S, n, K]
    tp = torch.einsum("bn,snk->sbk", w, P * T)
    pred_count = torch.einsum("bn,snk->sbk", w, P)
    true_count = (w @ T).unsqueeze(0)  # [1, B, K]
    total = w.sum(1)
    acc = tp.sum(-1) / total
    has_true = true_count > 0
    recall = torch.where(has_true, tp / true_count.clamp_min(1e-300), torch.zeros_like(tp))
    bal = recall.sum(-1) / has_true.sum(-1)
    denom = true_count + pred_count
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1e-300), torch.zeros_like(tp))
    macro = f1.sum(-1) / (denom > 0).sum(-1)
    out = {"accuracy": acc, "balanced_accuracy": bal, "macro_f1": macro}
    return {k: (v[:, 0] if single else v).numpy() for k, v in out.items()}


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray,
                      weights: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """R², Pearson, Spearman and MSE of ``y_pred [S, n, T]`` against ``y_true [n, T]``.

    ``[S, T]`` values, or ``[S, B, T]`` with ``weights [B, n]``. Spearman is Pearson on average
    ranks of the full sample; under resampling the ranks are kept (an approximation of the
    bootstrap Spearman, close for n in the hundreds).
    """
    Y = torch.as_tensor(np.asarray(y_true, dtype=np.float64))
    Yh = torch.as_tensor(np.asarray(y_pred, dtype=np.float64))
    single = weights is None
    w = torch.ones(1, Y.shape[0], dtype=torch.float64) if single else weights

    def moments(a: torch.Tensor, b: torch.Tensor):
        sw = w.sum(1)[None, :, None]
        ma = torch.einsum("bn,snt->sbt", w, a.expand_as(b) if a.ndim == 3 else a.expand(b.shape)) / sw
        mb = torch.einsum("bn,snt->sbt", w, b) / sw
        ab = torch.einsum("bn,snt->sbt", w, a * b) / sw
        aa = torch.einsum("bn,snt->sbt", w, (a * a).expand(b.shape)) / sw
        bb = torch.einsum("bn,snt->sbt", w, b * b) / sw
        return ma, mb, ab, aa, bb

    Y3 = Y.unsqueeze(0)
    ma, mb, ab, aa, bb = moments(Y3, Yh)
    var_a, var_b, cov = aa - ma ** 2, bb - mb ** 2, ab - ma * mb
    mse = aa - 2 * ab + bb
    r2 = 1 - mse / var_a
    pearson = cov / (var_a * var_b).clamp_min(1e-300).sqrt()
    rY = torch.as_tensor(stats.rankdata(Y.numpy(), axis=0))
    rYh = torch.as_tensor(stats.rankdata(Yh.numpy(), axis=1))
    ra, rb, rab, raa, rbb = moments(rY.unsqueeze(0), rYh)
    spearman = (rab - ra * rb) / ((raa - ra ** 2) * (rbb - rb ** 2)).clamp_min(1e-300).sqrt()
    out = {"r2": r2, "pearson": pearson, "spearman": spearman, "mse": mse}
    return {k: (v[:, 0] if single else v).numpy() for k, v in out.items()}


def classification_chance(y: np.ndarray, n_classes: int) -> dict[str, float]:
    """What an uninformed predictor scores on labels ``y`` (see module docstring)."""
    counts = np.bincount(np.asarray(y), minlength=n_classes)
    p = counts[counts > 0] / counts.sum()
    k = len(p)
    return {"accuracy": float(p.max()), "balanced_accuracy": 1.0 / k,
            "macro_f1": float(np.mean(2 * p / k / (p + 1 / k)))}


def _interval(boot: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the bootstrap axis 1 (row 0, the plain sample, excluded)."""
    a = (1 - level) / 2
    return np.quantile(boot[:, 1:], a, axis=1), np.quantile(boot[:, 1:], 1 - a, axis=1)


def _t_interval(folds: np.ndarray, level: float = 0.95, test_train: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over folds (axis 0) with a Student-t interval of variance ``(1/k + test_train) · s²``.

    ``test_train = 0`` is the naive interval (``s²/k``, folds treated as independent);
    ``n_test / n_train`` is Nadeau & Bengio's (2003) correction for the overlap of the training sets.
    """
    k = folds.shape[0]
    mean = folds.mean(0)
    half = stats.t.ppf(0.5 + level / 2, k - 1) * folds.std(0, ddof=1) * math.sqrt(1 / k + test_train)
    return mean, mean - half, mean + half


def _test_train(folds) -> float:
    """Mean ratio of test to training items over the folds (the Nadeau-Bengio correction term)."""
    return float(np.mean([len(te) / max(len(tr), 1) for tr, te in folds]))


# ----------------------------------------------------------------------------------------------
# evaluation drivers


def _check_slices(X: Any, slices: Sequence[Slice]) -> list[Slice]:
    if X.ndim != 3:
        raise EmolensError(f"expected activations [slices, items, d], got shape {tuple(X.shape)}")
    slices = [tuple(s) for s in slices]
    if len(slices) != X.shape[0] or any(len(s) != 3 for s in slices):
        raise EmolensError(f"{len(slices)} slice ids for {X.shape[0]} slices",
                           "pass one (site, layer, position) tuple per slice of X")
    return slices


def _valid_items(valid: np.ndarray, drop_invalid: bool, what: str) -> np.ndarray:
    bad = int((~valid).sum())
    if bad and not drop_invalid:
        raise EmolensError(f"{bad} items have {what}",
                           "pass drop_invalid=True to drop them (n reports the rest)")
    return np.flatnonzero(valid)


def _rows(task: str, target: str, slices: Sequence[Slice], metric: str, value, lo, hi, n: int,
          chance: float) -> list[dict]:
    return [{"task": task, "target": target, "site": s[0], "layer": int(s[1]), "position": int(s[2]),
             "metric": metric, "value": float(v), "ci_low": float(a), "ci_high": float(b), "n": int(n),
             "chance": float(chance)} for s, v, a, b in zip(slices, value, lo, hi, strict=True)]


def results_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A tidy frame with exactly the columns :data:`COLUMNS` from row dicts."""
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


CI_KINDS = ("auto", "bootstrap", "folds", "corrected")


def _folds_and_ci(protocol: str, ci: str) -> str:
    """The interval kind to use (``auto``: corrected under CV, bootstrap over test items for the paper split)."""
    if ci not in CI_KINDS:
        raise EmolensError(f"unknown ci {ci!r}", f"use one of {list(CI_KINDS)}")
    if ci == "auto":
        return "corrected" if protocol == "cv" else "bootstrap"
    if ci in ("folds", "corrected") and protocol == "paper":
        raise EmolensError(f"ci={ci!r} needs several folds", "use protocol='cv' or ci='bootstrap'")
    return ci


def _fold_chunks(X: Any, keep: np.ndarray, folds, slice_chunk: int | None, dev, dtype):
    """Yield ``(s0, s1, fold, train, test, Xtrain, Xtest)`` for every slice chunk and fold.

    Slices are moved to the device one chunk at a time (bounded memory), restricted to the kept
    items, and split by fold; both evaluators iterate exactly this way.
    """
    for s0, s1 in probes.slice_ranges(X.shape[0], slice_chunk):
        Xc = probes.slice_block(X, s0, s1, dev, dtype)
        if len(keep) != X.shape[1]:
            Xc = Xc[:, torch.as_tensor(keep, device=dev)]
        for fi, (tr, te) in enumerate(folds):
            yield s0, s1, fi, tr, te, Xc[:, torch.as_tensor(tr, device=dev)], Xc[:, torch.as_tensor(te, device=dev)]
        del Xc


def evaluate_classifier(X: Any, y: Any, slices: Sequence[Slice], *, task: str = "emotion",
                        probe: str = "logistic", protocol: str = "cv", k: int = 5, seed: int = 42,
                        C: float = 1.0, n_classes: int | None = None, standardize: bool = False,
                        ci: str = "auto", n_boot: int = 1000, shuffled: bool = False,
                        drop_invalid: bool = False, probe_kwargs: Mapping[str, Any] | None = None,
                        device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                        slice_chunk: int | None = None, convergence: bool = False) -> pd.DataFrame:
    """Classification probes (``"logistic"`` or ``"mlp"``) on every slice; a tidy frame.

    ``y [n]`` holds class ids (``-1``/NaN = no label). ``shuffled=True`` adds the shuffled-label
    control: the same probe fitted on training labels permuted independently per slice (seeded),
    scored against the true labels, as task ``"<task>/shuffled"``.

    ``convergence=True`` adds, per variant, rows of metric ``"converged"``: the share of the slice's fold fits
    that met their stopping rule (logistic: ``max|grad| <= tol``; MLP: stopped improving before
    ``max_epochs``); ``n`` stays the number of tested items. A value below 1 means the accuracy is of an
    unfinished fit, and says so in the table rather than in a log nobody reads.
    """
    slices = _check_slices(X, slices)
    ci = _folds_and_ci(protocol, ci)
    yv = np.asarray(y, dtype=np.float64)
    keep = _valid_items(np.isfinite(yv) & (yv >= 0), drop_invalid, "no label (-1 or NaN)")
    labels = yv[keep].astype(np.int64)
    K = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    n, S = len(labels), X.shape[0]
    folds = splits(n, protocol, strata=labels if protocol == "cv" else None, k=k, seed=seed)
    variants = {task: False, **({f"{task}/shuffled": True} if shuffled else {})}
    preds = {name: np.full((S, n), -1, dtype=np.int64) for name in variants}
    fold_scores: dict[str, list] = {name: [] for name in variants}
    converged = {name: np.zeros((S, len(folds)), dtype=bool) for name in variants}
    rng = np.random.default_rng(seed + 1)
    dev = probes.probe_device(X, device)
    kw = dict(probe_kwargs or {})
    if probe not in ("logistic", "mlp"):
        raise EmolensError(f"unknown probe {probe!r}", "use 'logistic' or 'mlp'")
    for s0, s1, fi, tr, te, Xtr, Xte in _fold_chunks(X, keep, folds, slice_chunk, dev, dtype):
        ytrs = {name: np.stack([rng.permutation(labels[tr]) for _ in range(s1 - s0)]) if shuf else labels[tr]
                for name, shuf in variants.items()}
        if probe == "logistic":  # the variants share X, so they share one preconditioner
            lfits = dict(zip(ytrs, probes.fit_logistic_labels(Xtr, list(ytrs.values()), C=C, n_classes=K,
                                                               standardize=standardize, device=dev, dtype=dtype,
                                                               **kw), strict=True))
        for name, ytr in ytrs.items():
            if probe == "logistic":
                fit = lfits[name]
                logits = probes.linear_logits(Xte, fit.coef, fit.intercept, dev, dtype, None)
                converged[name][s0:s1, fi] = fit.converged.numpy()
            else:
                mfit = probes.fit_mlp(Xtr, ytr, n_classes=K, standardize=standardize, seed=seed,
                                      device=dev, dtype=dtype, **kw)
                logits = probes.mlp_logits(mfit, Xte, dev, dtype, None)
                converged[name][s0:s1, fi] = mfit.converged.numpy()
            pred = logits.argmax(-1).numpy()
            preds[name][s0:s1, te] = pred
            if ci != "bootstrap":
                sc = classification_scores(labels[te], pred, K)
                if s0 == 0:
                    fold_scores[name].append({m: [] for m in sc})
                for m, v in sc.items():
                    fold_scores[name][fi][m].append(v)
    tested = np.concatenate([te for _, te in folds])
    chance = classification_chance(labels[tested], K)
    rows: list[dict] = []
    for name in variants:
        if convergence:
            share = converged[name].mean(1)  # a count, not an estimate: its interval is the value itself
            rows += _rows(name, "all", slices, "converged", share, share, share, len(tested), np.nan)
        if ci != "bootstrap":
            per = {m: np.stack([np.concatenate(f[m]) for f in fold_scores[name]])
                   for m in CLASSIFICATION_METRICS}
            extra = _test_train(folds) if ci == "corrected" else 0.0
            for m in CLASSIFICATION_METRICS:
                mean, lo, hi = _t_interval(per[m], test_train=extra)
                rows += _rows(name, "all", slices, m, mean, np.clip(lo, 0, 1), np.clip(hi, 0, 1), len(tested),
                              chance[m])
            continue
        w = _boot_weights(len(tested), n_boot, seed)
        boot = classification_scores(labels[tested], preds[name][:, tested], K, w)
        for m in CLASSIFICATION_METRICS:
            rows += _rows(name, "all", slices, m, boot[m][:, 0], *_interval(boot[m]), len(tested), chance[m])
    return results_frame(rows)


def evaluate_regressor(X: Any, Y: Any, slices: Sequence[Slice], names: Sequence[str] | None = None, *,
                       task: str = "appraisal", protocol: str = "cv", k: int = 5, seed: int = 42,
                       alpha: float | str | Sequence[float] = 5.0, standardize: bool = False,
                       strata: np.ndarray | None = None, ci: str = "auto", n_boot: int = 1000,
                       shuffled: bool = False, drop_invalid: bool = False,
                       device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                       slice_chunk: int | None = None) -> pd.DataFrame:
    """Ridge probes for every slice and target ``Y [n, T]`` (one row per target and metric).

    ``names`` label the targets (default: the paper's 20 appraisals when T == 20). Items with any
    NaN target are an error unless ``drop_invalid=True``. ``strata`` (e.g. emotion ids) makes the
    k folds stratified. ``shuffled=True`` adds task ``"<task>/shuffled"`` (rows of Y permuted).
    """
    slices = _check_slices(X, slices)
    ci = _folds_and_ci(protocol, ci)
    Yv = np.asarray(Y, dtype=np.float64)
    Yv = Yv[:, None] if Yv.ndim == 1 else Yv
    T = Yv.shape[1]
    if names is None:
        names = list(PAPER_APPRAISALS) if len(PAPER_APPRAISALS) == T else [f"target{t}" for t in range(T)]
    if len(names) != T:
        raise EmolensError(f"{len(names)} target names for {T} targets")
    keep = _valid_items(np.isfinite(Yv).all(1), drop_invalid, "NaN targets")
    Yk = Yv[keep]
    n, S = len(keep), X.shape[0]
    st = None if strata is None else np.asarray(strata)[keep]
    folds = splits(n, protocol, strata=st, k=k, seed=seed)
    variants = {task: False, **({f"{task}/shuffled": True} if shuffled else {})}
    preds = {name: np.full((S, n, T), np.nan) for name in variants}
    fold_scores: dict[str, list] = {name: [[] for _ in folds] for name in variants}
    rng = np.random.default_rng(seed + 1)
    dev = probes.probe_device(X, device)
    for s0, s1, fi, tr, te, Xtr, Xte in _fold_chunks(X, keep, folds, slice_chunk, dev, dtype):
        for name, shuf in variants.items():
            Ytr = Yk[tr]
            if shuf:
                Ytr = np.stack([Ytr[rng.permutation(len(tr))] for _ in range(s1 - s0)])
            fit = probes.fit_ridge(Xtr, Ytr, alpha=alpha, standardize=standardize, device=dev,
                                   dtype=dtype)
            pred = probes.linear_logits(Xte, fit.coef, fit.intercept, dev, dtype, None).double().numpy()
            preds[name][s0:s1, te] = pred
            if ci != "bootstrap":
                fold_scores[name][fi].append(regression_scores(Yk[te], pred))
    tested = np.concatenate([te for _, te in folds])
    Yt = Yk[tested]
    chance = {"r2": np.zeros(T), "pearson": np.zeros(T), "spearman": np.zeros(T), "mse": Yt.var(0)}
    rows: list[dict] = []
    for name in variants:
        if ci != "bootstrap":
            per = {m: np.stack([np.concatenate([c[m] for c in f]) for f in fold_scores[name]])
                   for m in REGRESSION_METRICS}  # [F, S, T]
            for m in REGRESSION_METRICS:
                mean, lo, hi = _t_interval(per[m], test_train=_test_train(folds) if ci == "corrected" else 0.0)
                for t, tname in enumerate(names):
                    rows += _rows(name, tname, slices, m, mean[:, t], lo[:, t], hi[:, t], len(tested),
                                  chance[m][t])
            continue
        boot = regression_scores(Yt, preds[name][:, tested], _boot_weights(len(tested), n_boot, seed))
        for m in REGRESSION_METRICS:
            lo, hi = _interval(boot[m])
            for t, tname in enumerate(names):
                rows += _rows(name, tname, slices, m, boot[m][:, 0, t], lo[:, t], hi[:, t], len(tested),
                              chance[m][t])
    return results_frame(rows)


def selectivity(task: pd.DataFrame, control: pd.DataFrame, name: str | None = None) -> pd.DataFrame:
    """Task metric minus control metric per slice, target and metric (Hewitt & Liang style).

    ``control`` is e.g. :func:`evaluate_classifier` on the first-word labels or its shuffled
    rows. The two come from different label vectors and splits, so no paired interval exists;
    ``ci_low``/``ci_high`` treat the two estimates as independent and combine their 95% intervals
    in quadrature (normal approximation: half-width ``sqrt(h_task^2 + h_control^2)``), NaN where
    either side has no interval. ``chance`` is 0 (no selectivity).
    """
    keys = ["target", "site", "layer", "position", "metric"]
    merged = task.merge(control, on=keys, suffixes=("", "_c"), validate="one_to_one")
    if len(merged) != len(task):
        raise EmolensError("task and control results do not cover the same slices and metrics")
    label = name or f"{task['task'].iloc[0]}-vs-{control['task'].iloc[0]}"
    value = merged["value"] - merged["value_c"]
    half = np.hypot((merged["ci_high"] - merged["ci_low"]) / 2, (merged["ci_high_c"] - merged["ci_low_c"]) / 2)
    out = merged.assign(task=label, value=value, ci_low=value - half, ci_high=value + half, chance=0.0)
    return out[list(COLUMNS)].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# the human baseline (paper §5.4)


@dataclass
class HumanBaseline:
    """Appraisal-ratings -> emotion classifier: accuracy with CI, and its weights.

    ``coef`` is emotions x appraisals (13 x 20), fitted on all items for ``protocol="cv"`` and on
    the training split for ``"paper"``; ``results`` is the tidy frame of all metrics.
    """

    accuracy: float
    ci_low: float
    ci_high: float
    n: int
    coef: pd.DataFrame
    intercept: pd.Series
    results: pd.DataFrame


def human_baseline(ratings: Any, y: Any, *, appraisal_names: Sequence[str] = PAPER_APPRAISALS,
                   emotion_names: Sequence[str] = EMOTIONS, protocol: str = "cv", k: int = 5, seed: int = 42,
                   C: float = 1.0, standardize: bool = False, n_boot: int = 1000,
                   drop_invalid: bool = False) -> HumanBaseline:
    """How well the *human* appraisal ratings ``[n, A]`` alone predict the emotion label ``y``."""
    R = np.asarray(ratings, dtype=np.float64)
    yv = np.asarray(y, dtype=np.float64)
    valid = np.isfinite(R).all(1) & np.isfinite(yv) & (yv >= 0)
    keep = _valid_items(valid, drop_invalid, "missing ratings or labels")
    R, labels = R[keep], yv[keep].astype(np.int64)
    K = len(emotion_names)
    res = evaluate_classifier(R[None], labels, [("human", 0, 0)], task="human_baseline", protocol=protocol,
                              k=k, seed=seed, C=C, n_classes=K, standardize=standardize, n_boot=n_boot,
                              dtype=torch.float64)
    idx = splits(len(labels), protocol, strata=labels, k=k, seed=seed)[0][0] if protocol == "paper" \
        else np.arange(len(labels))
    fit = probes.fit_logistic(R[None][:, idx], labels[idx], C=C, n_classes=K, standardize=standardize,
                              dtype=torch.float64)
    acc = res[res.metric == "accuracy"].iloc[0]
    coef = pd.DataFrame(fit.coef[0].numpy(), index=list(emotion_names), columns=list(appraisal_names))
    intercept = pd.Series(fit.intercept[0].numpy(), index=list(emotion_names))
    return HumanBaseline(float(acc.value), float(acc.ci_low), float(acc.ci_high), int(acc.n), coef, intercept,
                         res)


# ----------------------------------------------------------------------------------------------
# directions


def save_directions(path: str | Path, directions: Mapping[str, torch.Tensor],
                    metadata: Mapping[str, Any] | None = None) -> None:
    """Write directions with safetensors; metadata values that are not strings are stored as JSON."""
    from safetensors.torch import save_file

    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    save_file({k: v.detach().cpu().contiguous() for k, v in directions.items()}, str(path), metadata=meta)


def load_directions(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read ``(directions, metadata)`` written by :func:`save_directions`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
