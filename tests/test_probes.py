"""Batched probes against scikit-learn, and the evaluation layer on synthetic data with known answers."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn import metrics
from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from emolens.errors import EmolensError
from emolens.labels import EMOTIONS, PAPER_APPRAISALS
from emolens.probes import evaluation as pe
from emolens.probes.directions import fit_directions
from emolens.probes.estimators import (
    BatchedLogisticProbe,
    BatchedMLPProbe,
    BatchedRidgeProbe,
    LogisticProbe,
    MLPProbe,
    RidgeProbe,
    fit_logistic,
    fit_ridge,
    probe_device,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """These problems are tiny: one intra-op thread avoids OpenMP contention on shared CI cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _classes(S=3, n=400, d=20, K=4, sep=0.6, seed=0):
    """Anisotropic, offset Gaussian classes (raw-activation-like scales), harder per slice."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    scale = np.exp(rng.normal(0, 1, d))
    X = np.empty((S, n, d))
    for s in range(S):
        means = rng.normal(0, sep * (s + 1), (K, d))
        X[s] = (rng.normal(0, 1, (n, d)) + means[y]) * scale + 5 * scale
    return X, y


def _slices(S):
    return [("resid", layer, -1) for layer in range(S)]


# ---------------------------------------------------------------------------------------------- logistic


@functools.cache
def _sklearn_logistic(s: int) -> LogisticRegression:
    X, y = _classes()
    return LogisticRegression(C=0.5, max_iter=20000, tol=1e-8).fit(X[s, :300], y[:300])


@pytest.mark.parametrize("precondition", ["full", "diag"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_logistic_matches_sklearn(dtype, precondition):
    X, y = _classes()
    tr, te = np.arange(300), np.arange(300, 400)
    fit = fit_logistic(X[:, tr], y[tr], C=0.5, tol=1e-6 if dtype == torch.float64 else 1e-4, dtype=dtype,
                       precondition=precondition)
    assert fit.converged.all()
    for s in range(X.shape[0]):
        ref = _sklearn_logistic(s)
        ours = (X[s, te] @ fit.coef[s].double().numpy().T + fit.intercept[s].double().numpy()).argmax(1)
        assert abs((ours == y[te]).mean() - ref.score(X[s, te], y[te])) <= 0.01
        scale = np.abs(ref.coef_).max()
        tol = 1e-3 if dtype == torch.float64 else 5e-2
        np.testing.assert_allclose(fit.coef[s].double().numpy(), ref.coef_, atol=tol * scale)


def test_full_preconditioner_beats_jacobi_on_correlated_raw_features():
    """Residual-stream features are correlated and wildly scaled; the Cholesky preconditioner is
    there so L-BFGS converges in fewer iterations on such data (the objective is strictly convex,
    so a converged fit is the minimum)."""
    rng = np.random.default_rng(3)
    n, d, K = 300, 40, 4
    y = np.arange(n) % K
    latent = rng.normal(size=(n, 8)) + np.eye(K, 8)[y] * 1.5
    mix = rng.normal(size=(8, d)) * np.logspace(0, 2, d)  # low-rank mixing, scales over 2 decades
    X = (latent @ mix + 0.3 * rng.normal(size=(n, d)) + 50.0)[None]
    full = fit_logistic(X, y, tol=1e-6, max_iter=5000, dtype=torch.float64, precondition="full")
    assert full.converged.all()
    budget = 3 * int(full.n_iter.item())
    diag = fit_logistic(X, y, tol=1e-6, max_iter=budget, dtype=torch.float64, precondition="diag")
    assert not diag.converged.any() and diag.loss.item() > full.loss.item()  # 3x the budget, still short
    with pytest.raises(EmolensError, match="precondition"):
        fit_logistic(X, y, precondition="newton")


def test_logistic_batched_equals_one_at_a_time_and_reports_convergence():
    X, y = _classes(S=3)
    both = fit_logistic(X, y, tol=1e-7, dtype=torch.float64)
    for s in range(3):
        one = fit_logistic(X[s:s + 1], y, tol=1e-7, dtype=torch.float64)
        np.testing.assert_allclose(both.coef[s].numpy(), one.coef[0].numpy(), rtol=1e-4,
                                   atol=1e-4 * one.coef.abs().max().item())
    assert (both.grad_norm <= 1e-7).all() and both.converged.all() and (both.n_iter > 0).all()
    short = fit_logistic(X, y, tol=1e-9, max_iter=2, dtype=torch.float64)
    assert not short.converged.any() and (short.n_iter <= 2).all()


def _residual_like(S=2, n=260, d=64, K=13, seed=0):
    """Float32 activations at a real residual stream's scale: gemma-3-270m's has max |x| ~ 1.4e4
    (a few massive-mean dimensions) and feature sd up to ~400 next to dimensions of sd ~1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    X = np.empty((S, n, d), np.float32)
    for s in range(S):
        sd = np.exp(rng.normal(0.5, 1.0, d))
        sd[:3] = [393, 200, 80]
        mean = rng.normal(0, 1, d) * sd
        mean[:2] = [-1.2e4, 6e3]
        latent = rng.normal(size=(n, 8)) + np.eye(K, 8)[y] * 1.0
        X[s] = latent @ (rng.normal(size=(8, d)) * sd / 4) + rng.normal(size=(n, d)) * sd + mean
    return X, y


def test_logistic_stops_when_converged_on_residual_stream_scales():
    """On raw residual-scale float32 data the raw gradient's round-off sits above tol: the solver
    used to run every iteration without moving the loss and report failure. It must notice the
    stall, finish those slices in float64, and land on the float64 optimum, converged, early."""
    X, y = _residual_like()
    assert np.abs(X).max() > 1e4 and X.std(1).max() > 300
    ref = fit_logistic(X, y, C=0.1, max_iter=400, dtype=torch.float64)
    assert ref.converged.all()
    fit = fit_logistic(X, y, C=0.1, max_iter=400)  # float32 working precision
    assert fit.converged.all() and (fit.grad_norm <= 1e-4).all()
    assert (fit.n_iter < 150).all(), fit.n_iter  # not the whole budget
    assert fit.refined.any()  # the precision was raised for the slices that needed it, and it says so
    np.testing.assert_allclose(fit.loss.numpy(), ref.loss.numpy(), rtol=1e-6)
    scale = ref.coef.abs().max().item()
    np.testing.assert_allclose(fit.coef.double().numpy(), ref.coef.numpy(), atol=2e-3 * scale)
    # a stack where only some slices need float64 (regression: the refit must take their rows only)
    mixed = np.concatenate([X[:1], (X[1:] - X[1:].mean(1, keepdims=True)) / X[1:].std(1, keepdims=True)])
    both = fit_logistic(mixed, y, C=0.1, max_iter=400)
    assert both.converged.all() and both.refined[0] and not both.refined[1]
    # without refinement the stall still ends the solve early, reported as not converged
    raw = fit_logistic(X, y, C=0.1, max_iter=400, refine=False)
    assert (raw.n_iter < 150).all() and not raw.converged.all() and not raw.refined.any()


def test_cv_table_reports_convergence_per_slice():
    X, y = _classes(S=2)
    df = pe.evaluate_classifier(X, y, _slices(2), n_boot=20, shuffled=True, probe_kwargs={"max_iter": 1},
                                convergence=True)
    conv = df[df.metric == "converged"]
    assert set(conv.task) == {"emotion", "emotion/shuffled"} and (conv.n == 400).all()
    assert (conv.value < 1).all()  # one iteration is never enough here, and the table says so
    done = pe.evaluate_classifier(X, y, _slices(2), n_boot=20, convergence=True)
    assert (done[done.metric == "converged"].value == 1).all()
    mlp = pe.evaluate_classifier(X, y, _slices(2), probe="mlp", n_boot=20, probe_kwargs={"max_epochs": 2},
                                 convergence=True)
    assert (mlp[mlp.metric == "converged"].value == 0).all()


def test_per_slice_labels_and_absent_classes():
    X, y = _classes(S=2, K=4)
    y2 = np.stack([y, np.where(y == 3, 0, y)])  # class 3 absent from slice 1
    fit = fit_logistic(X, y2, n_classes=4, dtype=torch.float64)
    assert torch.isinf(fit.intercept[1, 3]) and fit.coef[1, 3].abs().max() == 0
    assert torch.isfinite(fit.intercept[0]).all()
    est = BatchedLogisticProbe(n_classes=4).fit(X, y2)
    assert (est.predict(X)[1] != 3).all()
    assert est.predict_proba(X).shape == (2, 400, 4)


def test_invalid_labels_are_an_error_not_silently_dropped():
    X, y = _classes(S=1)
    bad = y.copy()
    bad[5] = -1
    with pytest.raises(EmolensError, match="negative"):
        fit_logistic(X, bad)
    with pytest.raises(EmolensError, match="NaN"):
        fit_ridge(X, np.where(np.arange(400) == 3, np.nan, 1.0))
    with pytest.raises(EmolensError, match="1 items"):
        pe.evaluate_classifier(X, bad, _slices(1))
    df = pe.evaluate_classifier(X, bad, _slices(1), drop_invalid=True, n_boot=50)
    assert (df.n == 399).all()


def test_single_slice_estimators_are_sklearn_like():
    X, y = _classes(S=1)
    names = np.array(EMOTIONS[:4])[y]
    lp = LogisticProbe(C=1.0).fit(X[0], names)
    ref = LogisticRegression(max_iter=5000).fit(X[0], names)
    assert list(lp.classes_) == list(ref.classes_)
    assert lp.coef_.shape == ref.coef_.shape and lp.intercept_.shape == ref.intercept_.shape
    assert abs(lp.score(X[0], names) - ref.score(X[0], names)) <= 0.01
    assert lp.predict_proba(X[0]).shape == (400, 4)
    np.testing.assert_allclose(lp.predict_proba(X[0]).sum(1), 1, atol=1e-5)
    assert lp.get_params()["C"] == 1.0


@parametrize_with_checks([LogisticProbe(), RidgeProbe(), MLPProbe(hidden=8, lr=1e-2, max_epochs=30)])
def test_single_slice_estimators_pass_sklearns_estimator_checks(estimator, check):
    """The scikit-learn contract (input validation, classes_ from labels, n_features_in_, fitted
    state, NotFittedError, clone/pickle, dtypes), checked by sklearn itself. The MLP is small and
    short so the checks stay fast; the contract does not depend on its size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_chunked_streaming_equals_one_chunk_and_auto_device_is_cpu_here(tmp_path):
    """Slices streamed from a memmap a chunk at a time give the fit of the whole stack at once."""
    X, y = _classes(S=4)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.load(tmp_path / "x.npy", mmap_mode="r")
    whole = fit_logistic(X.astype(np.float32), y, C=0.5, dtype=torch.float64)
    chunked = fit_logistic(ro, y, C=0.5, dtype=torch.float64, slice_chunk=1, device="cpu")
    torch.testing.assert_close(chunked.coef, whole.coef)
    r1 = fit_ridge(ro, y.astype(float), alpha=2.0, slice_chunk=3, dtype=torch.float64)
    r2 = fit_ridge(X.astype(np.float32), y.astype(float), alpha=2.0, dtype=torch.float64)
    torch.testing.assert_close(r1.coef, r2.coef)
    m1 = BatchedMLPProbe(max_epochs=3, n_classes=4, slice_chunk=2, device="auto").fit(ro, y)
    m2 = BatchedMLPProbe(max_epochs=3, n_classes=4).fit(X.astype(np.float32), y)
    np.testing.assert_allclose(m1.decision_function(ro), m2.decision_function(X.astype(np.float32)), rtol=1e-5,
                               atol=1e-5)
    if not torch.cuda.is_available():
        assert probe_device(ro, "auto") == torch.device("cpu")


# ---------------------------------------------------------------------------------------------- ridge


@pytest.mark.parametrize("d", [30, 300])  # primal (d < n) and kernel (d > n) paths
def test_ridge_matches_sklearn(d):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3, 200, d)) * np.exp(rng.normal(size=d)) + 3
    B = rng.normal(size=(d, 5))
    Y = X[0] @ B / d + rng.normal(size=(200, 5))
    tr, te = np.arange(150), np.arange(150, 200)
    est = BatchedRidgeProbe(5.0).fit(X[:, tr], Y[tr])
    r2 = est.score(X[:, te], Y[te])
    for s in range(3):
        ref = Ridge(alpha=5.0).fit(X[s, tr], Y[tr])
        ref_r2 = metrics.r2_score(Y[te], ref.predict(X[s, te]), multioutput="raw_values")
        assert np.abs(r2[s] - ref_r2).max() < 0.01
        np.testing.assert_allclose(est.coef_[s], ref.coef_, atol=1e-3 * np.abs(ref.coef_).max())


def test_ridge_float32_survives_raw_activation_scales():
    """Residual streams carry a few huge dimensions (|x| ~ 1e3-1e4); in float32 the Gram's rounding
    then exceeds alpha=5 and a plain Cholesky fails. The fit must still match sklearn."""
    rng = np.random.default_rng(4)
    n, d = 120, 200  # d > n: the kernel path, rank-deficient Gram
    X = rng.normal(size=(2, n, d))
    X[:, :, :3] *= 3e3  # massive activations
    X += 40.0
    Y = X[0, :, 5:10] @ rng.normal(size=(5, 2)) + rng.normal(size=(n, 2))
    est = BatchedRidgeProbe(5.0, dtype=torch.float32).fit(X, Y)
    for s in range(2):
        ref = Ridge(alpha=5.0).fit(X[s], Y)
        assert np.isfinite(est.coef_[s]).all()
        ref_r2 = metrics.r2_score(Y, ref.predict(X[s]), multioutput="raw_values")
        assert np.abs(est.score(X, Y)[s] - ref_r2).max() < 0.01


@pytest.mark.parametrize("d", [30, 300])
def test_ridge_gcv_picks_the_alpha_ridgecv_picks(d):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2, 120, d)) * np.exp(rng.normal(size=d))
    Y = X[0] @ rng.normal(size=(d, 4)) * np.array([0.01, 0.1, 1.0, 0.0]) + rng.normal(size=(120, 4))
    alphas = np.logspace(-2, 5, 15)
    fit = fit_ridge(X, Y, alpha=alphas, dtype=torch.float64)
    for s in range(2):
        ref = RidgeCV(alphas=alphas, alpha_per_target=True).fit(X[s], Y)
        np.testing.assert_array_equal(fit.alpha[s].numpy(), ref.alpha_)
        np.testing.assert_allclose(fit.coef[s].numpy(), ref.coef_, atol=1e-6 * np.abs(ref.coef_).max())
    assert len(set(fit.alpha[0].tolist())) > 1  # it really chooses per target
    assert RidgeProbe("gcv").fit(X[0], Y[:, 0]).alpha_ > 0


# ---------------------------------------------------------------------------------------------- scaling


def test_standardisation_uses_training_statistics_only():
    X, y = _classes(S=1, n=400)
    tr, te = np.arange(300), np.arange(300, 400)
    Xte = X[0, te] * 3 + 100  # a test set with a different distribution must not leak into the fit
    ours = LogisticProbe(standardize=True, tol=1e-8, dtype=torch.float64).fit(X[0, tr], y[tr])
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=20000, tol=1e-10)).fit(X[0, tr], y[tr])
    np.testing.assert_allclose(ours.decision_function(Xte), ref.decision_function(Xte), rtol=1e-3, atol=1e-3)
    rr = RidgeProbe(5.0, standardize=True, dtype=torch.float64).fit(X[0, tr], y[tr].astype(float))
    rref = make_pipeline(StandardScaler(), Ridge(5.0)).fit(X[0, tr], y[tr].astype(float))
    np.testing.assert_allclose(rr.predict(Xte), rref.predict(Xte), rtol=1e-6, atol=1e-6)
    # and it is a different model from the unstandardised one
    raw = RidgeProbe(5.0, dtype=torch.float64).fit(X[0, tr], y[tr].astype(float))
    assert np.abs(raw.predict(Xte) - rr.predict(Xte)).max() > 1e-3


# ---------------------------------------------------------------------------------------------- MLP


def test_mlp_learns_xor_that_a_linear_probe_cannot_and_is_seeded():
    rng = np.random.default_rng(3)
    Z = rng.uniform(-1, 1, (2, 600, 2))
    y = ((Z[0, :, 0] > 0) ^ (Z[0, :, 1] > 0)).astype(int)
    X = np.concatenate([Z[:1], Z[:1]], 0)
    mlp = BatchedMLPProbe(lr=1e-2, max_epochs=150, seed=1).fit(X, y)
    assert (mlp.score(X, y) > 0.9).all()
    assert (BatchedLogisticProbe().fit(X, y).score(X, y) < 0.7).all()
    again = BatchedMLPProbe(lr=1e-2, max_epochs=150, seed=1).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), mlp.predict_proba(X))
    single = MLPProbe(lr=1e-2, max_epochs=150, seed=1).fit(X[0], y)
    assert single.score(X[0], y) > 0.9


# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_agree_with_sklearn_metrics():
    rng = np.random.default_rng(4)
    yt = rng.integers(0, 5, 300)
    yp = np.where(rng.random((2, 300)) < 0.6, yt, rng.integers(0, 6, (2, 300)))  # class 5 only predicted
    sc = pe.classification_scores(yt, yp, 6)
    for s in range(2):
        assert sc["accuracy"][s] == pytest.approx(metrics.accuracy_score(yt, yp[s]))
        assert sc["balanced_accuracy"][s] == pytest.approx(metrics.balanced_accuracy_score(yt, yp[s]))
        assert sc["macro_f1"][s] == pytest.approx(metrics.f1_score(yt, yp[s], average="macro"))
    Y = rng.integers(1, 6, (300, 3)).astype(float)
    Yh = Y + rng.normal(0, 1.5, (2, 300, 3))
    rs = pe.regression_scores(Y, Yh)
    for s in range(2):
        for t in range(3):
            assert rs["r2"][s, t] == pytest.approx(metrics.r2_score(Y[:, t], Yh[s, :, t]))
            assert rs["mse"][s, t] == pytest.approx(metrics.mean_squared_error(Y[:, t], Yh[s, :, t]))
            assert rs["pearson"][s, t] == pytest.approx(stats.pearsonr(Y[:, t], Yh[s, :, t])[0])
            assert rs["spearman"][s, t] == pytest.approx(stats.spearmanr(Y[:, t], Yh[s, :, t])[0])
    ch = pe.classification_chance(np.array([0, 0, 0, 1, 2, 2]), 13)
    assert ch["accuracy"] == 0.5 and ch["balanced_accuracy"] == pytest.approx(1 / 3)


def test_paper_split_is_sklearns_train_test_split():
    tr, te = pe.splits(137, "paper")[0]
    ref_tr, ref_te = train_test_split(np.arange(137), test_size=0.2, random_state=42)
    np.testing.assert_array_equal(tr, ref_tr)
    np.testing.assert_array_equal(te, ref_te)
    folds = pe.splits(100, "cv", strata=np.repeat([0, 1], 50))
    assert len(folds) == 5 and sorted(np.concatenate([f[1] for f in folds]).tolist()) == list(range(100))


# ---------------------------------------------------------------------------------------------- evaluation


def test_evaluation_frame_controls_and_selectivity():
    X, y = _classes(S=2, n=300, d=10, K=3, sep=3.0)
    df = pe.evaluate_classifier(X, y, _slices(2), shuffled=True, n_boot=200)
    assert tuple(df.columns) == pe.COLUMNS
    acc = df[df.metric == "accuracy"].set_index("task")
    assert (acc.loc["emotion", "value"] > 0.95).all()
    assert (acc.loc["emotion", "ci_low"] <= acc.loc["emotion", "value"]).all()
    shuf = acc.loc["emotion/shuffled"]
    assert (np.abs(shuf["value"] - shuf["chance"]) < 0.12).all()
    sel = pe.selectivity(df[df.task == "emotion"], df[df.task == "emotion/shuffled"])
    merged = sel.merge(df[df.task == "emotion"], on=["site", "layer", "position", "metric"])
    assert (sel.value > 0.5).all() and len(sel) == 6
    assert np.allclose(merged.value_x, merged.value_y - df[df.task == "emotion/shuffled"].value.to_numpy())
    half_t = (merged.ci_high_y - merged.ci_low_y) / 2
    half_c = (df[df.task == "emotion/shuffled"].ci_high - df[df.task == "emotion/shuffled"].ci_low).to_numpy() / 2
    assert np.allclose(merged.ci_high_x - merged.value_x, np.sqrt(half_t**2 + half_c**2))  # independent CIs
    assert (merged.ci_low_x < merged.value_x).all()
    X, y = _classes(S=2, n=300, d=10, K=3, sep=0.5)
    folds = pe.evaluate_classifier(X, y, _slices(2), ci="folds", protocol="cv")
    assert (folds.ci_low < folds.value).all() and (folds.value < folds.ci_high).all()
    paper = pe.evaluate_classifier(X, y, _slices(2), protocol="paper", n_boot=100)
    assert (paper.n == 60).all()


def test_regression_evaluation_rows():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(2, 250, 8))
    Y = np.stack([X[0, :, 0] * 2, rng.normal(size=250)], 1) + rng.normal(0, 0.5, (250, 2))
    df = pe.evaluate_regressor(X, Y, _slices(2), ["pleasantness", "noise"], n_boot=200)
    r2 = df[(df.metric == "r2") & (df.task == "appraisal")].set_index(["target", "layer"]).value
    assert r2["pleasantness", 0] > 0.8 and r2["noise", 0] < 0.1 and r2["pleasantness", 1] < 0.1
    assert set(df.metric) == set(pe.REGRESSION_METRICS) and tuple(df.columns) == pe.COLUMNS


def test_human_baseline_table():
    rng = np.random.default_rng(6)
    y = np.arange(260) % 13
    R = np.clip(np.round(rng.normal(3, 1, (260, 20)) + (np.eye(13)[y] @ rng.normal(0, 0.7, (13, 20)))), 1, 5)
    hb = pe.human_baseline(R, y, n_boot=100)
    assert hb.coef.shape == (13, 20) and list(hb.coef.columns) == list(PAPER_APPRAISALS)
    assert 0.3 < hb.accuracy < 1 and hb.ci_low < hb.accuracy < hb.ci_high and isinstance(hb.coef, pd.DataFrame)


def test_directions_leave_an_item_out_of_the_concepts_it_lacks():
    """The one missing-value rule: a missing label or rating drops the item from that concept only."""
    X, y = _classes(S=2, n=120, d=5, K=4, sep=1.0)
    Y = np.random.default_rng(3).integers(1, 6, (120, 2)).astype(float)
    y_missing, Y_missing = y.copy(), Y.copy()
    y_missing[:10] = -1
    Y_missing[10:30, 1] = np.nan
    got = fit_directions(X, y_missing, Y_missing, n_classes=4)
    keep = y_missing >= 0
    want_emotion = fit_directions(X[:, keep], y[keep], n_classes=4)
    for key in ("emotion/diffmean", "emotion/probe"):
        torch.testing.assert_close(got[key], want_emotion[key], atol=1e-4, rtol=1e-4)
    rated = np.isfinite(Y_missing[:, 1])
    want_a0 = fit_directions(X, ratings=Y[:, :1])  # appraisal 0 is rated by every item
    want_a1 = fit_directions(X[:, rated], ratings=Y[rated][:, 1:])
    for key in ("appraisal/diffmean", "appraisal/probe"):
        torch.testing.assert_close(got[key][:, :1], want_a0[key], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[key][:, 1:], want_a1[key], atol=1e-4, rtol=1e-4)
    undefined = fit_directions(X, np.full(120, -1), n_classes=4)  # nothing labelled: NaN, never zero
    assert torch.isnan(undefined["emotion/diffmean"]).all() and torch.isnan(undefined["emotion/probe"]).all()


def test_directions_shapes_diffmeans_and_roundtrip(tmp_path):
    X, y = _classes(S=2, n=200, d=6, K=13, sep=1.0)
    Y = np.random.default_rng(7).integers(1, 6, (200, 3)).astype(float)
    dirs = fit_directions(X, y, Y, n_classes=13)
    assert dirs["emotion/probe"].shape == (2, 13, 6) and dirs["emotion/diffmean"].shape == (2, 13, 6)
    assert dirs["appraisal/probe"].shape == (2, 3, 6) and dirs["appraisal/diffmean"].shape == (2, 3, 6)
    for s in range(2):
        for k in range(13):
            direct = X[s, y == k].mean(0) - X[s, y != k].mean(0)
            np.testing.assert_allclose(dirs["emotion/diffmean"][s, k].numpy(), direct, rtol=1e-4, atol=1e-3)
        for a in range(3):
            direct = X[s, Y[:, a] >= 4].mean(0) - X[s, Y[:, a] <= 2].mean(0)
            np.testing.assert_allclose(dirs["appraisal/diffmean"][s, a].numpy(), direct, rtol=1e-4, atol=1e-3)
    path = tmp_path / "dirs.safetensors"
    pe.save_directions(path, dirs, {"model": "tiny", "slices": _slices(2)})
    back, meta = pe.load_directions(path)
    assert meta["model"] == "tiny" and meta["slices"].startswith("[[")
    torch.testing.assert_close(back["emotion/probe"], dirs["emotion/probe"])
