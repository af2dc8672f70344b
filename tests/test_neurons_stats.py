"""Streaming neuron statistics against in-memory references (numpy, scipy, statsmodels), and their nulls."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as sps

from emolens.neurons import NeuronMoments, bh_by_target, correlation_p, fisher_interval


def _data(seed=0, n=120, L=2, N=5, A=3, E=4, offset=1e4):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, E, n)
    x = rng.normal(size=(n, L, N)) + offset + 0.5 * g[:, None, None]  # large mean: cancellation trap
    y = rng.normal(size=(n, A)) + g[:, None]
    x[:, 0, 0] += 0.8 * y[:, 0]  # one neuron tracks appraisal 0
    return x, y, g


def _stream(x, y, g, E, sizes=(7, 1, 30, 13)):
    m = NeuronMoments(x.shape[1], x.shape[2], y.shape[1], E)
    start, i = 0, 0
    while start < len(x):
        stop = start + sizes[i % len(sizes)]
        m.update(x[start:stop], y[start:stop], g[start:stop])
        start, i = stop, i + 1
    return m


def _residual(v, g, E):
    design = np.column_stack([np.ones(len(g)), np.eye(E)[g][:, 1:]])
    return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]


def test_streaming_equals_in_memory_numpy():
    x, y, g = _data()
    m = _stream(x, y, g, 4)
    flat = x.reshape(len(x), -1)
    ref = np.corrcoef(np.column_stack([flat, y]), rowvar=False)[: flat.shape[1], flat.shape[1]:]
    np.testing.assert_allclose(m.correlations().reshape(-1, 3), ref, atol=1e-9)
    np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.var, x.var(0, ddof=1), rtol=1e-7)
    assert m.n == len(x)


def test_partial_correlation_equals_regression_residuals():
    x, y, g = _data(seed=1)
    m = _stream(x, y, g, 4)
    rx, ry = _residual(x.reshape(len(x), -1), g, 4), _residual(y, g, 4)
    ref = np.array([[np.corrcoef(rx[:, j], ry[:, a])[0, 1] for a in range(3)] for j in range(rx.shape[1])])
    np.testing.assert_allclose(m.partial_correlations().reshape(-1, 3), ref, atol=1e-9)
    assert m.n_covariates == 3


def test_partial_p_equals_statsmodels_ols_t_test():
    # The partial correlation's t test is the OLS t test of x's coefficient with the covariates in.
    x, y, g = _data(seed=2)
    m = _stream(x, y, g, 4)
    p = correlation_p(m.partial_correlations(), m.n, m.n_covariates)
    for j, a in [(0, 0), (3, 1), (7, 2)]:
        design = np.column_stack([x.reshape(len(x), -1)[:, j], np.ones(len(g)), np.eye(4)[g][:, 1:]])
        ols = sm.OLS(y[:, a], design).fit()
        np.testing.assert_allclose(p.reshape(-1, 3)[j, a], ols.pvalues[0], rtol=1e-6)


def test_plain_p_equals_scipy_pearsonr():
    x, y, g = _data(seed=3)
    m = _stream(x, y, g, 4)
    p = correlation_p(m.correlations(), m.n)
    flat = x.reshape(len(x), -1)
    for j in range(flat.shape[1]):
        np.testing.assert_allclose(p.reshape(-1, 3)[j, 1], sps.pearsonr(flat[:, j], y[:, 1]).pvalue, rtol=1e-6)


def test_bh_equals_reference_step_up():
    rng = np.random.default_rng(4)
    p = rng.uniform(size=(3, 7, 2)) ** 3
    q = bh_by_target(p)
    for a in range(2):
        flat = p[..., a].ravel()
        order = np.argsort(flat)
        m = len(flat)
        raw = flat[order] * m / np.arange(1, m + 1)
        ref = np.empty(m)
        ref[order] = np.minimum(1, np.minimum.accumulate(raw[::-1])[::-1])
        np.testing.assert_allclose(q[..., a].ravel(), ref)


def test_fisher_interval_matches_formula_and_covers():
    lo, hi = fisher_interval(np.array([0.3]), 103)
    np.testing.assert_allclose(lo, np.tanh(np.arctanh(0.3) - 1.959963985 / 10), rtol=1e-6)
    np.testing.assert_allclose(hi, np.tanh(np.arctanh(0.3) + 1.959963985 / 10), rtol=1e-6)
    rng = np.random.default_rng(5)
    rho, n, hits = 0.4, 80, 0
    for _ in range(300):
        a = rng.normal(size=n)
        b = rho * a + np.sqrt(1 - rho**2) * rng.normal(size=n)
        lo, hi = fisher_interval(np.corrcoef(a, b)[0, 1], n)
        hits += lo <= rho <= hi
    assert 0.91 <= hits / 300 <= 0.98


def test_constant_neuron_gives_nan_not_noise():
    x, y, g = _data(seed=6)
    x[:, 1, 2] = 3.25
    m = _stream(x, y, g, 4)
    assert np.isnan(m.correlations()[1, 2]).all() and np.isnan(m.partial_correlations()[1, 2]).all()


def test_bh_null_rejects_at_most_five_percent_and_finds_real_neurons():
    """Global null (neurons unrelated to ratings): any discovery at q < .05 in <= 5% of 400 runs
    (within a binomial band; BH controls the family-wise rate under the global null); with 3 real
    neurons it finds them."""
    rng = np.random.default_rng(7)
    n, L, N, E, sims = 60, 2, 25, 3, 400
    false_runs, found = 0, 0
    for _ in range(sims):
        g = rng.integers(0, E, n)
        x = rng.normal(size=(n, L, N)) + g[:, None, None]
        y = rng.normal(size=(n, 1)) + g[:, None]
        m = _stream(x, y, g, E)
        q = bh_by_target(correlation_p(m.partial_correlations(), m.n, m.n_covariates))
        false_runs += bool((q < 0.05).any())
        x[:, 0, :3] += 1.0 * (y - g[:, None])  # 3 neurons track the within-emotion rating
        m = _stream(x, y, g, E)
        q = bh_by_target(correlation_p(m.partial_correlations(), m.n, m.n_covariates))
        found += bool((q[0, :3] < 0.05).all())
    assert false_runs / sims <= 0.05 + 2.58 * np.sqrt(0.05 * 0.95 / sims)  # binomial 99% band
    assert found / sims >= 0.9


def test_update_rejects_bad_groups():
    m = NeuronMoments(1, 2, 1, 2)
    with pytest.raises(ValueError, match="groups"):
        m.update(np.zeros((2, 1, 2)), np.zeros((2, 1)), [0, 5])
