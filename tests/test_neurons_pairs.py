"""Minimal-pair neuron evidence: pair effects, their agreement with corpus r, and the sign-flip null."""

from __future__ import annotations

import numpy as np
import pytest

from emolens.neurons.pairs import pair_agreement, pair_effects

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pair_effect_is_signed_mean_change_over_sd():
    delta = np.array([[1.0, 2.0], [-3.0, 2.0], [1.0, 0.0]])
    change = np.array([2.0, -1.0, 4.0])
    np.testing.assert_allclose(pair_effects(delta, change, np.array([1.0, 2.0])), [5 / 3, 0.0])


def test_agreement_null_rejects_at_most_five_percent_and_finds_real_agreement():
    """Pairs that move no neuron: p <= .05 in <= 5% of 150 runs; pairs that move the r-ranked neurons: found."""
    rng = np.random.default_rng(0)
    sims, n_pairs, width = 150, 24, 150
    false, found = 0, 0
    for _ in range(sims):
        r = rng.normal(scale=0.2, size=width)
        change = rng.choice([-3.0, 3.0], size=n_pairs)
        noise = rng.normal(size=(n_pairs, width))
        false += pair_agreement(noise, change, np.ones(width), r, n_perm=99, seed=1)["p"] <= 0.05
        moved = noise + 0.8 * np.sign(change)[:, None] * r[None, :] / 0.2
        found += pair_agreement(moved, change, np.ones(width), r, n_perm=99, seed=1)["p"] <= 0.05
    assert false / sims <= 0.05 + 2.58 * np.sqrt(0.05 * 0.95 / sims)
    assert found / sims >= 0.9


def test_pairs_table_on_builtin_stimuli(tiny_llama):
    from emolens.neurons.collect import neuron_pass
    from emolens.neurons.pairs import pairs_table
    from emolens.neurons.table import neuron_table
    from test_neurons_pass import synthetic_dataset

    table = neuron_table(neuron_pass(tiny_llama, synthetic_dataset(), batch_size=8, progress=False))
    agreement, top = pairs_table(tiny_llama, table, [0, 1, 2], ["pleasantness", "other_responsblt"],
                                 batch_size=16, top=5, n_perm=19)
    assert set(agreement.appraisal) == {"pleasantness", "other_responsblt"}
    assert (agreement.n_pairs >= 20).all() and (agreement.p >= 0.05).all()
    assert len(top) == 10
    for _, part in top.groupby("appraisal"):
        assert part["pair_effect"].abs().is_monotonic_decreasing
