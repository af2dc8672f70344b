"""Mean ablation of neuron sets through the engine, matched random sets, and the causal comparison's null."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolens.engine.intervention import Capture, run_forward
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.neurons import neuron_pass, neuron_table
from emolens.neurons.ablation import (
    NeuronSet,
    _cells,
    ablation_ops,
    ablation_table,
    compare_to_random,
    matched_random_sets,
)
from test_neurons_pass import synthetic_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ablation_sets_exactly_the_chosen_neurons_to_their_means(tiny_llama):
    prompts = build_prompts(["my dog died", "I won the prize today"], PromptSpec(), tiny_llama.tokenizer)
    batch = next(iter_batches(tiny_llama.tokenizer, prompts, 2, "cpu"))
    mean = np.random.default_rng(0).normal(size=(3, 128))
    chosen = NeuronSet(np.array([0, 2, 2]), np.array([5, 7, 100]))
    cap = Capture("neurons", layers="all", positions=[-1, -2])
    clean_out, clean = run_forward(tiny_llama, batch, [cap])
    out, run = run_forward(tiny_llama, batch, [*ablation_ops(chosen, [0, 1, 2], mean), cap])
    before, after = clean.captures["neurons"], run.captures["neurons"]
    torch.testing.assert_close(after[:, 0, 0, 5], torch.full((2,), mean[0, 5], dtype=torch.float32))
    want = torch.tensor(mean[2, [7, 100]], dtype=torch.float32).expand(2, 2)
    torch.testing.assert_close(after[:, 2, 0, [7, 100]], want)
    torch.testing.assert_close(after[:, 0, 1], before[:, 0, 1])  # other positions untouched
    torch.testing.assert_close(after[:, 0, 0, :5], before[:, 0, 0, :5])  # other neurons untouched
    assert not torch.allclose(out.logits[:, -1], clean_out.logits[:, -1])


def test_matched_random_sets_share_layer_and_decile_cell():
    rng = np.random.default_rng(1)
    mean, var = rng.normal(size=(2, 2000)), rng.gamma(2.0, size=(2, 2000))
    target = NeuronSet(np.array([4, 4, 7, 7, 7]), np.array([3, 9, 10, 50, 1999]))
    sets = matched_random_sets(target, [4, 7], mean, var, n_sets=30)
    cells = _cells(mean, var, 10)
    taken = set(zip(target.layers.tolist(), target.neurons.tolist(), strict=True))
    for s in sets:
        assert list(s.layers) == [4, 4, 7, 7, 7]
        pairs = set(zip(s.layers.tolist(), s.neurons.tolist(), strict=True))
        assert len(pairs) == 5 and not pairs & taken
        for layer, n, tn in zip(s.layers, s.neurons, target.neurons, strict=True):
            row = [4, 7].index(layer)
            assert cells[row, n] == cells[row, tn]
    assert len({tuple(s.neurons) for s in sets}) == 30


def test_random_comparison_null_rejects_at_most_five_percent():
    """When the 'top' set is just another random set, p <= .05 with the interval below 0 in <= 5% of
    300 runs; a real drop is found."""
    rng = np.random.default_rng(2)
    sims, rejections, power = 300, 0, 0
    for _ in range(sims):
        item = rng.normal(size=40)  # item difficulty shared by every set
        effects = item + rng.normal(scale=0.5, size=(20, 40)) - 0.2
        res = compare_to_random(effects[0], effects[1:], n_boot=200)
        rejections += res["p"] <= 0.05 and res["difference_hi"] < 0
        res = compare_to_random(effects[0] - 1.0, effects[1:], n_boot=200)
        power += res["p"] <= 0.05 and res["difference_hi"] < 0
    assert rejections / sims <= 0.05 + 2.58 * np.sqrt(0.05 * 0.95 / sims)
    assert power / sims >= 0.9


def test_ablation_table_end_to_end(tiny_llama):
    data = synthetic_dataset(n=40)
    result = neuron_pass(tiny_llama, data, batch_size=8, progress=False)
    table = neuron_table(result)
    out = ablation_table(tiny_llama, data, result, table, ["other_responsblt"], k=5, n_sets=3, batch_size=8)
    row = out.iloc[0]
    assert row.target == "anger" and row.n_items == 10 and row.n_sets == 3
    assert np.isfinite(row.effect) and row.effect_lo <= row.effect <= row.effect_hi
    assert 0.25 <= row.p <= 1.0


def test_ablation_fast_path_equals_full_forwards(tiny_llama):
    """The one-token steps on a shared prefix give the scores full forwards give, clean and ablated."""
    data = synthetic_dataset(n=40)
    result = neuron_pass(tiny_llama, data, batch_size=8, progress=False)
    table = neuron_table(result)
    fast = ablation_table(tiny_llama, data, result, table, ["other_responsblt"], k=5, n_sets=3, batch_size=8)
    full = ablation_table(tiny_llama, data, result, table, ["other_responsblt"], k=5, n_sets=3, batch_size=8,
                          fast=False)
    for col in ("clean_logp", "effect", "random_effect", "difference", "p"):
        assert fast.iloc[0][col] == pytest.approx(full.iloc[0][col], abs=1e-5), col
    assert fast.iloc[0].effect != 0.0  # the ablation moved the target's score at all
    assert 0 <= fast.iloc[0].n_positive_r <= 5
