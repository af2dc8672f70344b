"""emolens.stats: clustered intervals cover at their level, p-values follow their conventions."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from emolens import stats


def _clustered(g, n_clusters=20, per=10, rho_sd=1.0):
    """Rows with a shared per-cluster effect (true mean 0): rows of one item are correlated."""
    effect = g.normal(0, rho_sd, n_clusters)
    x = np.repeat(effect, per) + g.normal(0, 0.3, n_clusters * per)
    return x, np.repeat(np.arange(n_clusters), per)


def test_cluster_bootstrap_covers_at_its_level_where_the_naive_interval_does_not():
    g = np.random.default_rng(0)
    hit_cluster = hit_naive = 0
    runs = 200
    for r in range(runs):
        x, c = _clustered(g)
        ci = stats.cluster_bootstrap(x, c, n_boot=400, seed=r)
        naive = stats.cluster_bootstrap(x, n_boot=400, seed=r)  # every row its own cluster
        hit_cluster += ci.low <= 0 <= ci.high
        hit_naive += naive.low <= 0 <= naive.high
        assert ci.n_clusters == 20 and naive.n_clusters == 200
    # binomial slack around 0.95 for 200 runs (the percentile bootstrap is slightly narrow at 20 clusters)
    assert hit_cluster / runs >= 0.88
    assert hit_naive / runs < 0.6


def test_ratio_of_sums_and_paired_difference():
    g = np.random.default_rng(1)
    num = g.normal(1, 1, 60)
    den = g.uniform(0.01, 2, 60)
    ci = stats.cluster_bootstrap(num, np.arange(60) // 3, den, n_boot=300)
    assert ci.value == pytest.approx(num.sum() / den.sum())
    assert ci.low < ci.value < ci.high
    assert ci.value != pytest.approx(np.mean(num / den))  # not the mean of ratios
    a, b = g.normal(size=40), g.normal(size=40)
    paired = stats.cluster_bootstrap(a - b, np.arange(40), n_boot=300, method="BCa")
    assert paired.value == pytest.approx((a - b).mean()) and paired.method == "BCa"
    same = stats.cluster_bootstrap(np.ones(10), np.arange(10))  # constant: a point interval, not NaN
    assert (same.low, same.high) == (1.0, 1.0)
    assert np.isnan(stats.cluster_bootstrap([1.0, 2.0], [0, 0]).low)  # one cluster: nothing to resample


def test_cluster_statistic_agrees_with_cluster_bootstrap_for_a_mean():
    g = np.random.default_rng(2)
    x, c = _clustered(g, 15, 4)
    a = stats.cluster_bootstrap(x, c, n_boot=500, seed=3)
    b = stats.cluster_statistic(lambda rows: x[rows].mean(), c, n_boot=500, seed=3)
    assert b.value == pytest.approx(a.value)
    # same resampling scheme, different estimator of the same quantity per resample (weights vs rows)
    assert b.low == pytest.approx(a.low, abs=0.15) and b.high == pytest.approx(a.high, abs=0.15)


def test_peak_location_is_sure_of_a_sharp_peak_and_wide_on_a_flat_curve():
    g = np.random.default_rng(4)
    layers = [1, 3, 5, 7, 9]
    sharp = g.normal(0, 1, (80, 5)) + np.array([0, 0, 3, 0, 0])
    loc = stats.peak_location(sharp, layers, n_boot=300)
    assert loc.peak == 5 and loc.low == 5 and loc.high == 5 and loc.share_at_peak > 0.95
    flat = g.normal(0, 1, (30, 5))
    wide = stats.peak_location(flat, layers, n_boot=300)
    assert wide.high - wide.low >= 4 and wide.share_at_peak < 0.7
    low = stats.peak_location(-sharp, layers, maximize=False, n_boot=100)
    assert low.peak == 5


def test_permutation_p_convention_and_max_statistic():
    null = np.arange(19, dtype=float)  # 0..18
    assert stats.permutation_p(100.0, null) == pytest.approx(1 / 20)
    assert stats.permutation_p(18.0, null) == pytest.approx(2 / 20)
    assert stats.permutation_p(-1.0, null, "less") == pytest.approx(1 / 20)
    assert stats.permutation_p(-18.5, null, "two-sided") == pytest.approx(1 / 20)
    assert np.isnan(stats.permutation_p(np.nan, null)) and np.isnan(stats.permutation_p(1.0, [np.nan]))
    # the max over settings of each draw: draw j is the same replicate in every setting
    null2 = np.array([[0.0, 5.0, 1.0], [4.0, 0.0, np.nan]])
    p = stats.max_statistic_p([4.5, 3.0], null2)
    assert p == pytest.approx([2 / 4, 3 / 4])  # maxima 4, 5, 1


def test_max_statistic_controls_the_search_where_the_uncorrected_best_does_not():
    g = np.random.default_rng(5)
    runs, settings, n = 300, 10, 39
    naive = corrected = 0
    for _ in range(runs):
        draws = g.normal(size=(settings, n + 1))  # column 0 is the observation: exchangeable with the rest
        best = int(draws[:, 0].argmax())
        naive += stats.permutation_p(draws[best, 0], draws[best, 1:]) <= 0.05
        corrected += stats.max_statistic_p(draws[:, 0], draws[:, 1:])[best] <= 0.05
    assert naive / runs > 0.2
    assert corrected / runs <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / runs)


def test_adjust_matches_holm_and_bh_and_keeps_nans():
    p = [0.01, 0.04, np.nan, 0.03]
    assert stats.adjust(p, "holm")[[0, 1, 3]] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(stats.adjust(p)[2])
    assert stats.adjust(p, "bh")[[0, 1, 3]] == pytest.approx([0.03, 0.04, 0.04])
    with pytest.raises(ValueError):
        stats.adjust(p, "nope")
    g = np.random.default_rng(6)
    for _ in range(20):  # the closed-form Holm equals statsmodels' on random inputs with ties
        q = np.round(g.uniform(0, 0.3, g.integers(1, 12)), 2)
        assert stats.adjust(q, "holm") == pytest.approx(multipletests(q, method="holm")[1])


def test_chance_normalisation_and_balanced_accuracy():
    assert stats.majority_share([0, 0, 0, 1]) == 0.75
    assert stats.chance_normalised(0.75, 0.75) == 0.0 and stats.chance_normalised(1.0, 0.5) == 1.0
    assert np.isnan(stats.chance_normalised(1.0, 1.0))
    gold, pred = np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])
    assert stats.balanced_accuracy(gold, pred) == 0.5
