"""Work accounting counts the model work an analysis does exactly, so regressions show on a CPU.

The expected counts are derived here from the batch shapes, not read back from the code under
test: a fast path that silently re-runs full forwards, or a condition that stops sharing the
clean prefix, changes these numbers.
"""

from __future__ import annotations

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
    assert rate["forwards"] == 2 and rate["token_layers_per_s"] > 0
    row = stage_row("ablate", Work(4, 10, 10 * lm.n_layers, 2.0), rate["token_layers_per_s"])
    assert row["floor_s"] == pytest.approx(10 * lm.n_layers / rate["token_layers_per_s"])
    assert row["ratio"] == pytest.approx(row["floor_s"] / 2.0)
