"""The streaming neuron pass on a tiny model equals a full capture analysed in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolens.data.corpus import EmotionDataset
from emolens.engine.intervention import Capture, run_forward
from emolens.errors import EmolensError
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.labels import EMOTIONS
from emolens.neurons import neuron_pass, neuron_table, significant_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ["my dog died", "I won the prize", "a thief came", "the test failed", "we met again", "the food was bad"]


def synthetic_dataset(n=40, seed=0, appraisals=("pleasantness", "other_responsblt")):
    rng = np.random.default_rng(seed)
    texts = [f"{WORDS[i % len(WORDS)]} and {WORDS[(3 * i + 1) % len(WORDS)]} {i}" for i in range(n)]
    labels = [EMOTIONS[i % 4] for i in range(n)]
    ratings = rng.integers(1, 6, size=(n, len(appraisals))).astype(float)
    ratings[3, 0] = np.nan  # one unrated item is left out of every statistic
    labels[5] = None  # and so is one unlabelled item
    return EmotionDataset(ids=[f"i{i}" for i in range(n)], texts=texts, labels=labels, appraisals=ratings,
                          appraisal_names=tuple(appraisals), name="synthetic")


def test_streaming_pass_equals_full_capture(tiny_llama):
    data = synthetic_dataset()
    result = neuron_pass(tiny_llama, data, keep_layers=[1], batch_size=8, progress=False)
    assert result.n_skipped == 2 and len(result.items) == 38
    assert result.prefix_tokens > 5  # the template's shared tokens ran once: the fast path is what is checked
    prompts = build_prompts([data.texts[i] for i in result.items], PromptSpec(), tiny_llama.tokenizer)
    full = np.zeros((len(prompts), 3, 128))
    for batch in iter_batches(tiny_llama.tokenizer, prompts, 5, "cpu"):
        _, run = run_forward(tiny_llama, batch, [Capture("neurons", layers="all", positions=[-1],
                                                         dtype=torch.float32)], need_logits=False)
        full[batch.indices] = run.captures["neurons"][:, :, 0].numpy()
    y = data.appraisals[result.items].astype(float)
    flat = full.reshape(len(full), -1)
    ref = np.corrcoef(np.column_stack([flat, y]), rowvar=False)[: flat.shape[1], flat.shape[1]:]
    np.testing.assert_allclose(result.moments.correlations().reshape(-1, 2), ref, atol=1e-5)
    np.testing.assert_allclose(result.kept[1], full[:, 1], atol=1e-5)


def test_neuron_table_columns_and_ranks(tiny_llama):
    result = neuron_pass(tiny_llama, synthetic_dataset(), batch_size=8, progress=False)
    table = neuron_table(result)
    assert len(table) == 3 * 128 * 2
    for col in ("layer", "neuron", "appraisal", "r", "partial_r", "q", "partial_q", "rank", "ci_lo", "ci_hi"):
        assert col in table
    one = table[table.appraisal == "pleasantness"].sort_values("rank")
    assert one["rank"].tolist() == list(range(1, 3 * 128 + 1))
    assert (one["r"].abs().diff().dropna() <= 1e-12).all()
    assert ((table.ci_lo <= table.r) & (table.r <= table.ci_hi)).all()
    assert (table.q >= table.p - 1e-12).all()
    counts = significant_counts(table, alpha=1.01)
    assert counts.to_numpy().sum() == len(table)


def test_pass_refuses_a_dataset_without_ratings(tiny_llama):
    data = synthetic_dataset()
    data.appraisals[:] = np.nan
    with pytest.raises(EmolensError, match="appraisal"):
        neuron_pass(tiny_llama, data, progress=False)


def test_sparse_table_covers_kept_layers(tiny_llama):
    from emolens.neurons.sparse import sparse_table

    result = neuron_pass(tiny_llama, synthetic_dataset(), keep_layers=[0, 2], batch_size=8, progress=False)
    table = sparse_table(result, ks=[1, 8])
    assert set(table.layer) == {0, 2} and set(table.appraisal) == {"pleasantness", "other_responsblt"}
    assert sorted(table[(table.layer == 0) & (table.appraisal == "pleasantness")].k) == [1, 8, 128]
    assert (table.n_train + table.n_test == 38).all()


def test_time_budget_keeps_a_random_block_and_its_exact_statistics(tiny_llama):
    """A budget that stops after the first block leaves a seeded random subset of items, and every
    statistic is over exactly those items (equal to a full pass over that subset)."""
    data = synthetic_dataset(n=60)
    full = neuron_pass(tiny_llama, data, keep_layers=[1], batch_size=4, progress=False, extra_sites=("resid",))
    assert not full.stopped_early and full.n_planned == len(full.items) == 58
    cut = neuron_pass(tiny_llama, data, keep_layers=[1], batch_size=4, progress=False, extra_sites=("resid",),
                      budget_s=0.0, block=3, seed=3)
    assert cut.stopped_early and cut.n_planned == 58 and len(cut.items) == cut.moments.n == 12
    assert not np.array_equal(np.sort(cut.items), full.items[:12])  # a random block, not the first items
    pos = np.searchsorted(full.items, cut.items)
    np.testing.assert_allclose(cut.kept[1], full.kept[1][pos], atol=1e-5)
    np.testing.assert_allclose(cut.extra["resid"], full.extra["resid"][pos], atol=1e-5)
    np.testing.assert_array_equal(cut.ratings, full.ratings[pos])
    sub = data.subset([data.ids[i] for i in cut.items])
    ref = neuron_pass(tiny_llama, sub, batch_size=4, progress=False)
    np.testing.assert_allclose(cut.moments.correlations(), ref.moments.correlations(), atol=1e-5)
    np.testing.assert_allclose(cut.moments.partial_correlations(), ref.moments.partial_correlations(), atol=1e-5)
    eighth = neuron_pass(tiny_llama, data, batch_size=4, progress=False, budget_s=0.0, block=1, seed=3)
    assert len(eighth.items) == 8  # a block is at least an eighth of the items (58 / 8 -> 8), for low padding


def test_shared_prefix_pass_equals_full_forward_pass(tiny_llama):
    data = synthetic_dataset()
    fast = neuron_pass(tiny_llama, data, keep_layers=[1], batch_size=8, progress=False)
    full = neuron_pass(tiny_llama, data, keep_layers=[1], batch_size=8, progress=False, share_prefix=False)
    assert fast.prefix_tokens > 5 and full.prefix_tokens == 0
    np.testing.assert_allclose(fast.moments.correlations(), full.moments.correlations(), atol=1e-5)
    np.testing.assert_allclose(fast.moments.partial_correlations(), full.moments.partial_correlations(), atol=1e-5)
    np.testing.assert_allclose(fast.kept[1], full.kept[1], atol=1e-5)
