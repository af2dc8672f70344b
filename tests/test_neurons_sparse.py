"""Sparse (top-k) probes: selection on the train split only, a null at R² <= 0, a sparse code found."""

from __future__ import annotations

import numpy as np

from emolens.neurons.sparse import default_ks, item_split, sparse_curve, train_ranking


def test_default_ks_double_up_to_the_width():
    assert default_ks(20) == [1, 2, 4, 8, 16]


def test_ranking_uses_only_the_rows_given():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 6))
    y = rng.normal(size=100)
    X[:50, 4] = y[:50]  # neuron 4 tracks y only on the first half
    assert train_ranking(X[:50], y[:50])[0] == 4
    assert train_ranking(X[50:], y[50:])[0] != 4


def test_null_neurons_give_no_held_out_r2():
    """Selecting the top-k of 200 unrelated neurons on train must not leak into held-out R²."""
    rng = np.random.default_rng(1)
    means = []
    for _ in range(20):
        X = rng.normal(size=(120, 200))
        y = rng.normal(size=120)
        train, test = item_split(np.zeros(120, int), 0.25, 0)
        curve = sparse_curve(X, y, train, test, ks=[1, 4, 16])
        means.append(curve["r2"].to_numpy())
    assert np.mean(means, 0).max() < 0.03


def test_sparse_code_is_found_and_matches_dense():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 128))
    y = X[:, [3, 40, 77]] @ np.array([1.0, -0.8, 0.6]) + 0.3 * rng.normal(size=300)
    train, test = item_split(np.zeros(300, int), 0.25, 0)
    curve = sparse_curve(X, y, train, test).set_index(["kind", "k"])["r2"]
    assert curve[("top-k", 4)] > 0.8
    assert curve[("top-k", 4)] >= curve[("dense", 128)] - 0.02
    assert curve[("top-k", 1)] < curve[("top-k", 4)]


def test_r2_interval_covers_the_population_r2():
    """y = x0 + noise with population R² 0.5: the held-out interval of the k=1 probe covers 0.5 in
    about 95% of 100 simulated corpora (>= 85% allowed: test-set noise only, finite n)."""
    rng = np.random.default_rng(3)
    covered, sims = 0, 100
    for _ in range(sims):
        X = rng.normal(size=(240, 20))
        y = X[:, 0] + rng.normal(size=240)
        train, test = item_split(np.zeros(240, int), 0.25, 0)
        row = sparse_curve(X, y, train, test, ks=[1]).iloc[0]
        assert row.r2_lo <= row.r2 <= row.r2_hi
        covered += row.r2_lo <= 0.5 <= row.r2_hi
    assert covered / sims >= 0.85
