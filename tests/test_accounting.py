"""Work accounting counts the model work an analysis does exactly, so regressions show on a CPU.

The expected counts are derived here from the batch shapes, not read back from the code under
test: a fast path that silently re-runs full forwards, or a condition that stops sharing the
clean prefix, changes these numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolens.causal.ablation import ablate
from emolens.causal.common import make_batches
from emolens.data.loading import load_dataset
from emolens.engine.accounting import Work, WorkCounter, plain_forward_rate, stage_row
from emolens.engine.shared_prefix import shared_prefix_length
from emolens.engine.windows import Window
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.model.loading import load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WINDOWS = [Window(1, 3), Window(2, 1)]


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny:llama")


@pytest.fixture(scope="module")
def ds():
    return load_dataset("stimuli").sample(6, seed=0)


def _shapes(lm, ds, batch_size):
    prompts = build_prompts(ds.texts, PromptSpec(), lm.tokenizer)
    return [tuple(b.input_ids.shape) for b in make_batches(lm, prompts, batch_size)]


def test_counting_leaves_logits_bit_identical_and_counts_one_forward(lm):
    ids = torch.randint(0, 100, (3, 7))
    with torch.no_grad():
        before = lm.model(input_ids=ids).logits
        counter = WorkCounter.attach(lm)
        with counter.span() as work:
            after = lm.model(input_ids=ids).logits
        counter.detach()
    assert torch.equal(before, after)
    assert (work.forwards, work.tokens, work.token_layers) == (1, 21, 21 * lm.n_layers)
    with torch.no_grad():
        lm.model(input_ids=ids)
    assert counter.total.forwards == 1  # detached: no more counting


@pytest.mark.parametrize("fast", [False, True])
def test_ablation_does_exactly_the_expected_work(lm, ds, fast):
    """K conditions over N items in batches (B_b rows, T_b padded tokens), L layers.

    Naive path (``fast=False``): (1 clean + K) forwards per batch, each over B_b * T_b tokens in
    every layer.

    Fast path at position -1: the template's P shared tokens once (one row), then per batch one
    prefix forward over the B_b * (T_b - 1 - P) tokens after them and the clean one-token suffix;
    the K conditions split by first edited layer (window 1 +- 1 starts at 0, window 2 at 2), each
    group stacked into one forward of K/2 copies of the batch; the group starting at layer 2
    replays layer 1's clean output, captured by one more clean suffix forward that stops after
    layer 1.
    """
    kinds, sites = ["zero", "random"], ["attn", "resid"]
    K = len(kinds) * len(sites) * len(WINDOWS)
    L = lm.n_layers
    shapes = _shapes(lm, ds, 4)
    counter = WorkCounter.attach(lm)
    try:
        with counter.span() as work:
            result = ablate(lm, ds, sites=sites, windows=WINDOWS, positions=[-1], kinds=kinds, batch_size=4,
                            fast=fast, progress=False)
    finally:
        counter.detach()
    assert len(result.conditions) == K
    if fast:
        half = K // 2
        prompts = build_prompts(ds.texts, PromptSpec(), lm.tokenizer)
        P = shared_prefix_length(lm.tokenizer([p.text for p in prompts])["input_ids"])
        assert 0 < P < min(T for _, T in shapes) - 1
        # shared tokens; per batch: prefix, clean suffix, hidden, two stacked groups
        forwards = 1 + sum(1 + 1 + 1 + 2 for _ in shapes)
        tokens = P + sum(B * (T - 1 - P) + B + B + 2 * half * B for B, T in shapes)
        token_layers = P * L + sum(B * (T - 1 - P) * L + B * L + B * 2 + half * B * L + half * B * (L - 2)
                                   for B, T in shapes)
    else:
        forwards = len(shapes) * (1 + K)
        tokens = sum((1 + K) * B * T for B, T in shapes)
        token_layers = tokens * L
    assert work.forwards == forwards == result.info["forwards"]
    assert work.token_layers == token_layers == result.info["token_layers"]
    assert work.tokens == tokens


def test_plain_rate_and_stage_row(lm, ds):
    prompts = build_prompts(ds.texts, PromptSpec(), lm.tokenizer)
    rate = plain_forward_rate(lm, prompts, batch_size=3)
    assert rate["token_layers"] == sum(B * T for B, T in _shapes(lm, ds, 3)) * lm.n_layers
    assert rate["forwards"] == len(_shapes(lm, ds, 3)) and rate["token_layers_per_s"] > 0
    row = stage_row("ablate", Work(4, 10, 10 * lm.n_layers, 2.0), rate["token_layers_per_s"])
    assert row["floor_s"] == pytest.approx(10 * lm.n_layers / rate["token_layers_per_s"])
    assert row["ratio"] == pytest.approx(row["floor_s"] / 2.0)


def test_padding_is_counted_per_layer_and_only_in_calls_that_pad(lm):
    """A left-padded call's masked positions are its padding; a call whose rows all have their full
    length pads nothing and is not ragged; the hooks never read the padding back to the host (no
    sync per forward): a snapshot does."""
    ids = torch.randint(3, 100, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, :4] = 0  # row 0: 3 real tokens
    mask[1, :1] = 0  # row 1: 6
    counter = WorkCounter.attach(lm)
    with torch.no_grad():
        with counter.span() as padded:
            lm.model(input_ids=ids, attention_mask=mask)
        with counter.span() as full:
            lm.model(input_ids=ids, attention_mask=torch.ones_like(mask))
    counter.detach()
    L = lm.n_layers
    assert (padded.token_layers, padded.pad_token_layers, padded.ragged_token_layers) == (21 * L, 5 * L, 21 * L)
    counter = WorkCounter.attach(lm)  # the hooks sum padding where the mask is; only a snapshot reads it back
    with torch.no_grad():
        lm.model(input_ids=ids, attention_mask=mask)
        lm.model(input_ids=ids, attention_mask=mask)
    assert counter.total.pad_token_layers == 0 and counter.total.token_layers == 42 * L
    assert counter.snapshot().pad_token_layers == 10 * L
    counter.detach()
    assert (full.token_layers, full.pad_token_layers, full.ragged_token_layers) == (21 * L, 0, 0)
    assert (padded - full).pad_token_layers == 5 * L and (padded + full).token_layers == 42 * L


def test_batch_plan_takes_every_prompt_once_in_length_order_within_rows_and_slots():
    """Rows never exceed the batch size; packed, nor token slots (rows x longest) the batch size x
    the mean length (a lone prompt longer than that goes alone), which on a long-tailed set pads far
    less than cutting sorted prompts by rows alone (unpacked), and equal lengths are cut by rows."""
    from emolens.inputs.batching import batch_plan

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(10, 30, 240), rng.integers(100, 500, 16)])
    rng.shuffle(lengths)
    plan = batch_plan(lengths, 64, pack=True)
    assert sorted(np.concatenate(plan).tolist()) == list(range(len(lengths)))
    budget = 64 * lengths.mean()
    for rows in plan:
        assert 1 <= len(rows) <= 64
        assert len(rows) == 1 or len(rows) * lengths[rows].max() <= budget
    flat = lengths[np.concatenate(plan)]
    assert (np.diff(flat) >= 0).all()

    def pads(batches):
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)

    by_rows = batch_plan(lengths, 64)
    order = np.argsort(lengths, kind="stable")
    assert [b.tolist() for b in by_rows] == [order[i:i + 64].tolist() for i in range(0, len(order), 64)]
    assert pads(plan) < pads(by_rows) / 4
    assert [len(b) for b in batch_plan(np.full(10, 7), 4, pack=True)] == [4, 4, 2]
