"""The logistic solver's fast paths give what the full path gives, on residual-stream-scale data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emolens.probes import control_task
from emolens.probes import estimators as probes
from emolens.probes import evaluation as pe
from emolens.probes.logistic import (
    _shifted_cholesky,
    _triangular_gram,
    _triangular_inverse,
    fit_logistic,
    fit_logistic_labels,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gemma_like(S=6, n=96, d=192, K=13, seed=0):
    """Float32 activations shaped like the quick study's (fewer items than features) at the scale of
    gemma-3-270m's late residual stream (hundreds of dimensions with means and sd in the hundreds, a
    massive one ~3e4) in every other slice, and of an early layer's (sd ~1) in the rest: the float32
    Gram of the large ones is indefinite, as the real one is."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    X = np.empty((S, n, d), np.float32)
    for s in range(S):
        big = s % 2 == 0
        sd = np.exp(rng.normal(4.0 if big else 0.0, 1.0, d))
        mean = rng.normal(0, 1.5, d) * sd
        if big:
            mean[0] = -3e4
        latent = rng.normal(size=(n, 8)) + np.eye(K, 8)[y]
        X[s] = latent @ (rng.normal(size=(8, d)) * sd / 4) + rng.normal(size=(n, d)) * sd + mean
    return X, y


def _bound(X: np.ndarray, K: int = 13) -> torch.Tensor:
    """The solver's Hessian bound ``P`` (float32 Gram, float64 after), as ``_Softmax`` builds it."""
    Xt = torch.as_tensor(X)
    n = Xt.shape[1]
    mu = Xt.mean(1)
    gram = torch.baddbmm(-mu.unsqueeze(2) * mu.unsqueeze(1), Xt.transpose(1, 2), Xt, alpha=1.0 / n)
    P = gram.double() / K
    P.diagonal(dim1=1, dim2=2).add_(1.0 / n)
    return P


def _whole_batch_cholesky(P: torch.Tensor) -> torch.Tensor:
    """The full path: shift every slice and refactorise the whole batch until every slice factors."""
    L, info = torch.linalg.cholesky_ex(P)
    jitter = 1e-10
    while bool((info > 0).any()):
        P.diagonal(dim1=1, dim2=2).add_(jitter * P.diagonal(dim1=1, dim2=2).mean(1, keepdim=True))
        L, info = torch.linalg.cholesky_ex(P)
        jitter *= 10
    return L


def test_shifted_cholesky_refactors_failing_slices_only_and_equals_the_whole_batch_loop():
    X, _ = _gemma_like()
    P = _bound(X)
    first = torch.linalg.cholesky_ex(P)[1]
    assert (first > 0).any() and (first == 0).any()  # some slices need the shift, some do not
    ref_P, new_P = P.clone(), P.clone()
    ref = _whole_batch_cholesky(ref_P)
    calls = []
    real = torch.linalg.cholesky_ex

    def counting(A, *a, **kw):
        calls.append(A.shape[0])
        return real(A, *a, **kw)

    torch.linalg.cholesky_ex = counting
    try:
        new = _shifted_cholesky(new_P)
    finally:
        torch.linalg.cholesky_ex = real
    assert torch.equal(new, ref) and torch.equal(new_P, ref_P)  # same factors, same shifted P
    steps = len(calls) - 1
    assert sum(calls) < (steps + 1) * P.shape[0]  # fewer slice factorisations than the whole-batch loop
    # nothing to shift: one factorisation, P untouched
    Q = _bound(X[1::2])
    Q0 = Q.clone()
    assert torch.equal(_shifted_cholesky(Q), torch.linalg.cholesky(Q0)) and torch.equal(Q, Q0)


@pytest.mark.parametrize("max_iter", [15, 300])
def test_shared_preconditioner_fits_equal_separate_fits(max_iter):
    """True and shuffled labels on one X: one preconditioner, the same fits as two fit_logistic calls,
    both where the cap stops them early (unconverged: the iterates themselves must agree) and at convergence."""
    X, y = _gemma_like()
    rng = np.random.default_rng(1)
    shuffled = np.stack([rng.permutation(y) for _ in range(X.shape[0])])
    fewer = np.where(y == 12, 0, y)  # a label set with a class absent
    ys = [y, shuffled, fewer]
    shared = fit_logistic_labels(X, ys, n_classes=13, max_iter=max_iter)
    if max_iter == 15:
        assert not shared[0].converged.any()
    else:
        assert shared[0].converged.any() and shared[0].refined.any()  # converged ones, float64-finished ones
    for yv, got in zip(ys, shared, strict=True):
        ref = fit_logistic(X, yv, n_classes=13, max_iter=max_iter)
        for name in ("coef", "intercept", "n_iter", "grad_norm", "converged", "loss", "refined"):
            assert torch.equal(getattr(got, name), getattr(ref, name)), name
    # label sets with a different number of classes each get their own preconditioner, still equal
    two = fit_logistic_labels(X[:2], [y % 2, y], max_iter=max_iter)
    assert two[0].coef.shape[1] == 2 and two[1].coef.shape[1] == 13
    assert torch.equal(two[0].coef, fit_logistic(X[:2], y % 2, max_iter=max_iter).coef)


def _separately(X, ys, **kw):
    """The full path: one fit_logistic per label set."""
    return [probes.fit_logistic(X, y, **kw) for y in ys]


def test_evaluators_with_shared_fits_equal_separate_fits(monkeypatch):
    X, y = _gemma_like(S=4)
    slices = [("resid", i, -1) for i in range(4)]
    kw = dict(protocol="paper", n_boot=50, shuffled=True, convergence=True, probe_kwargs={"max_iter": 30})
    fast = pe.evaluate_classifier(X, y, slices, **kw)
    words = [f"w{i % 7}" for i in range(len(y))]
    fast_ct = control_task.control_task_selectivity(X, y, words, slices, n_boot=50, max_iter=30)
    monkeypatch.setattr(probes, "fit_logistic_labels", _separately)
    pd.testing.assert_frame_equal(fast, pe.evaluate_classifier(X, y, slices, **kw))
    pd.testing.assert_frame_equal(fast_ct, control_task.control_task_selectivity(X, y, words, slices, n_boot=50,
                                                                                  max_iter=30))


@pytest.mark.parametrize("block", [50, 128])
def test_blocked_triangular_inverse_and_gram_equal_the_full_products(block):
    """The preconditioner's L^{-1} and Q = L^{-1} diag(pen) L^{-T}, skipping zero blocks, equal the dense
    solve and product up to float64 round-off, on an indefinite-then-shifted residual-scale bound."""
    X, _ = _gemma_like(d=200)  # 200: blocks of 50 tile it, blocks of 128 do not
    L = _shifted_cholesky(_bound(X))
    full_inv = torch.linalg.solve_triangular(L, torch.eye(200, dtype=L.dtype).expand_as(L), upper=False)
    inv = _triangular_inverse(L, block)
    assert torch.equal(inv, inv.tril())
    np.testing.assert_allclose(inv.numpy(), full_inv.numpy(), rtol=0, atol=1e-12 * full_inv.abs().max().item())
    pen = torch.as_tensor(np.random.default_rng(0).uniform(0.5, 2.0, (X.shape[0], 200)))
    for p in (None, pen):
        full = (full_inv if p is None else full_inv * p[:, None, :]) @ full_inv.transpose(1, 2)
        got = _triangular_gram(full_inv, p, block)
        assert torch.equal(got, got.transpose(1, 2))
        np.testing.assert_allclose(got.numpy(), full.numpy(), rtol=0, atol=1e-12 * full.abs().max().item())


def test_blocked_preconditioner_fits_equal_the_dense_ones(monkeypatch):
    """Whole fits with the blocked products equal those with the dense ones: at the iteration cap
    (unconverged, so the iterates themselves) to round-off, at convergence within the solver's tolerance."""
    from emolens.probes import logistic

    X, y = _gemma_like()
    runs = ((15, False), (300, False), (300, True))
    fast = [fit_logistic(X, y, n_classes=13, max_iter=m, standardize=st) for m, st in runs]
    monkeypatch.setattr(logistic, "_triangular_inverse", lambda L: torch.linalg.solve_triangular(
        L, torch.eye(L.shape[-1], dtype=L.dtype).expand_as(L), upper=False))
    monkeypatch.setattr(logistic, "_triangular_gram", lambda A, pen: (A if pen is None else A * pen[:, None, :])
                        @ A.transpose(1, 2))
    dense = [fit_logistic(X, y, n_classes=13, max_iter=m, standardize=st) for m, st in runs]
    cap = (fast[0], dense[0])
    assert not cap[1].converged.any() and torch.equal(cap[0].n_iter, cap[1].n_iter)
    scale = cap[1].coef.abs().amax((1, 2), keepdim=True)
    np.testing.assert_allclose((cap[0].coef / scale).numpy(), (cap[1].coef / scale).numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(cap[0].loss.numpy(), cap[1].loss.numpy(), rtol=1e-6)
    for a, b in zip(fast[1:], dense[1:], strict=True):
        both = a.converged & b.converged
        assert both.sum() >= 4
        # a slice still short of tol when the budget ran out may be just past it on the other path (its
        # float64 finish starts where float32 round-off stalled); it must have used the budget
        short = torch.where(a.converged, b.n_iter, a.n_iter)  # iterations of the unconverged one
        assert (short[a.converged != b.converged] >= 300).all()
        # max|grad| <= 1e-4 on separable raw activations (n < d) pins the objective and the fitted
        # probabilities, not every weight (the penalty alone curves the flat directions, by 1 / (C n))
        np.testing.assert_allclose(a.loss[both].numpy(), b.loss[both].numpy(), rtol=2e-2)
        pa, pb = (torch.baddbmm(f.intercept.unsqueeze(1), torch.as_tensor(X), f.coef.transpose(1, 2)).softmax(-1)
                  for f in (a, b))
        assert (pa - pb)[both].abs().max() < 1e-3 and torch.equal(pa.argmax(-1)[both], pb.argmax(-1)[both])
