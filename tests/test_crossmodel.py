"""Cross-model similarity: CKA invariances, RSA's Mantel null, transfer of a model onto itself."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist
from scipy.stats import ortho_group

from emolens.crossmodel import (
    centroid_rdm,
    cka_inference,
    cka_matrix,
    cka_matrix_interval,
    linear_cka,
    mantel,
    relative_depth_pairs,
    transfer,
)
from emolens.labels import EMOTIONS


def _acts(seed=0, n=260, d=24):
    rng = np.random.default_rng(seed)
    labels = np.array([EMOTIONS[i % 13] for i in range(n)])
    centres = rng.normal(size=(13, d)) * 2
    x = centres[[EMOTIONS.index(e) for e in labels]] + rng.normal(size=(n, d))
    return x, labels


def test_cka_of_itself_and_of_a_rotation_is_one():
    x, _ = _acts()
    q = ortho_group.rvs(x.shape[1], random_state=1)
    assert abs(linear_cka(x, x) - 1) < 1e-12
    assert abs(linear_cka(x, x @ q) - 1) < 1e-10
    assert abs(linear_cka(x, 3.0 * x + 5.0) - 1) < 1e-10
    noise = np.random.default_rng(2).normal(size=x.shape)
    assert linear_cka(x, noise) < 0.3


def test_cka_matrix_equals_pairwise_cka():
    x, _ = _acts()
    y = np.tanh(x[:, :10])
    m = cka_matrix([x, y], [y, x[:, :5]])
    ref = np.array([[linear_cka(a, b) for b in (y, x[:, :5])] for a in (x, y)])
    np.testing.assert_allclose(m, ref, atol=1e-10)


def test_transfer_to_itself_equals_native():
    x, labels = _acts()
    ratings = x[:, :2] @ np.array([[1.0, 0.2], [0.0, 1.0]]) + np.random.default_rng(3).normal(size=(len(x), 2))
    rows = transfer(x, x, labels, ratings, ("pleasantness", "effort"))
    for row in rows:
        assert abs(row["transferred"] - row["native"]) < 0.01, row
        for side in ("native", "transferred"):  # every value, R² included, has its interval
            assert row[f"{side}_lo"] <= row[side] <= row[f"{side}_hi"], row
        assert abs(row["transferred_lo"] - row["native_lo"]) < 0.02, row
    r2 = rows[1]
    assert r2["native_lo"] < r2["native"] < r2["native_hi"] and r2["native_hi"] - r2["native_lo"] < 0.5
    assert rows[0]["native"] > 0.5


def test_transfer_from_unrelated_model_is_near_chance():
    x, labels = _acts()
    rows = transfer(x, np.random.default_rng(4).normal(size=x.shape), labels)
    assert rows[0]["native"] > 0.5 and rows[0]["transferred"] < 0.2


def test_mantel_null_rejects_at_most_five_percent_over_200_simulations():
    """Unrelated geometries: p <= .05 in <= 5% of 200 runs (binomial band); related geometries: rejected."""
    rng = np.random.default_rng(5)
    sims, false, found = 200, 0, 0
    for _ in range(sims):
        a = pdist(rng.normal(size=(13, 6)))
        b_points = rng.normal(size=(13, 6))
        false += mantel(a, pdist(b_points), n_perm=199, seed=int(rng.integers(1e9)))[1] <= 0.05
        shared = rng.normal(size=(13, 6))
        related = mantel(pdist(shared + 0.5 * rng.normal(size=(13, 6))),
                         pdist(shared + 0.5 * rng.normal(size=(13, 6))), n_perm=199, seed=1)
        found += related[1] <= 0.05
    assert false / sims <= 0.05 + 2.58 * np.sqrt(0.05 * 0.95 / sims)
    assert found / sims >= 0.9


def test_centroid_rdm_and_depth_pairs():
    x, labels = _acts()
    rdm = centroid_rdm(x, labels, EMOTIONS)
    assert rdm.shape == (78,) and (rdm > 0).all()
    assert relative_depth_pairs(18, 24) [-1] == (1.0, 17, 23)
    assert relative_depth_pairs(18, 24)[8][1:] == (8, 11)


def test_cka_inference_value_interval_and_permutation_null():
    """The value is linear CKA; unrelated representations (high CKA by chance at small n) are
    rejected in <= 5% of 150 runs; a noisy rotation of the same items is always found."""
    x, _ = _acts(n=80, d=12)
    got = cka_inference(x, x @ ortho_group.rvs(12, random_state=0), n_boot=50, n_perm=19)
    assert abs(got["cka"] - 1) < 1e-10 and got["cka_lo"] <= 1 + 1e-9 and got["p"] == 0.05
    rng = np.random.default_rng(6)
    sims, false, found, null_means = 150, 0, 0, []
    for _ in range(sims):
        a = rng.normal(size=(50, 20))
        res = cka_inference(a, rng.normal(size=(50, 30)), n_boot=0, n_perm=39, seed=int(rng.integers(1e9)))
        false += res["p"] <= 0.05
        null_means.append(res["null_mean"])
        related = cka_inference(a, a[:, :10] @ rng.normal(size=(10, 30)) + rng.normal(size=(50, 30)),
                                n_boot=0, n_perm=39, seed=1)
        found += related["p"] <= 0.05
    assert false / sims <= 0.05 + 2.58 * np.sqrt(0.05 * 0.95 / sims)
    assert found / sims >= 0.9
    assert np.mean(null_means) > 0.2  # why the null is needed: chance CKA is far from 0 at this n
    boot = cka_inference(x, x + rng.normal(size=x.shape), n_boot=200, n_perm=0)
    assert boot["cka_lo"] < boot["cka"] < boot["cka_hi"]


def test_cka_matrix_interval_equals_resampling_the_features_pair_by_pair():
    """The joint Gram-gather bootstrap gives, for every layer pair, the quantiles of linear CKA
    recomputed from the resampled feature rows with the same draws (and brackets the estimate)."""
    x, _ = _acts(n=60, d=8)
    rng = np.random.default_rng(7)
    layers_a = [x, np.tanh(x[:, :5])]
    layers_b = [x @ ortho_group.rvs(8, random_state=2) + rng.normal(size=x.shape), rng.normal(size=(60, 6))]
    lo, hi = cka_matrix_interval(layers_a, layers_b, n_boot=40, seed=3)
    draws = np.random.default_rng(3)
    ref = np.empty((40, 2, 2))
    for b in range(40):
        idx = draws.integers(0, 60, 60)
        ref[b] = [[linear_cka(a[idx], c[idx]) for c in layers_b] for a in layers_a]
    np.testing.assert_allclose(lo, np.quantile(ref, 0.025, axis=0), atol=1e-5)
    np.testing.assert_allclose(hi, np.quantile(ref, 0.975, axis=0), atol=1e-5)
    point = cka_matrix(layers_a, layers_b)
    assert (lo[0, 0] < point[0, 0] < hi[0, 0]) and hi[0, 1] < lo[0, 0]  # the noise layer sits clearly lower
