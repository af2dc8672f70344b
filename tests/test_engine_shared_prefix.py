"""The shared-prompt-prefix fast path reads what a full forward reads, on every tiny family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolens.engine.intervention import Capture, run_forward
from emolens.engine.shared_prefix import prefix_state, run_suffix, shared_prefix_length, suffix_batch
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.model.loading import load_model
from emolens.model.tiny import TINY_FAMILIES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = ["my dog died", "I won the prize after a very long and hard year of work", "a thief came",
         "the test failed again", "we met"]


def test_shared_prefix_length_leaves_every_sequence_its_own_tokens():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter one keeps one token
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 4, 5]], keep=2) == 2
    assert shared_prefix_length([[7, 1], [8, 1]]) == 0 and shared_prefix_length([]) == 0


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_suffix_on_shared_prefix_equals_full_forward(family):
    lm = load_model(f"tiny:{family}")
    prompts = build_prompts(TEXTS, PromptSpec(), lm.tokenizer)
    enc = lm.tokenizer([p.text for p in prompts], add_special_tokens=True)["input_ids"]
    length = shared_prefix_length(enc)
    assert length > 5  # the template's instruction is shared
    prefix = prefix_state(lm.model, torch.tensor(enc[0][:length]))
    if prefix is None:
        pytest.skip(f"tiny:{family}'s cache cannot be shared (full forwards are used)")
    ops = [Capture(site, layers="all", positions=[-1, -2], dtype=torch.float32) for site in ("neurons", "resid")]
    pad = lm.tokenizer.pad_token_id
    fast_batches = 0
    for batch in iter_batches(lm.tokenizer, prompts, 3, "cpu"):
        suffix = suffix_batch(batch, prefix, pad)
        if suffix is None:  # only a batch wider than the sliding window (64 in tiny gemmas) runs in full
            assert prefix.window and batch.input_ids.shape[1] > prefix.window
            continue
        fast_batches += 1
        assert suffix.input_ids.shape[1] == batch.input_ids.shape[1] - length
        _, full = run_forward(lm, batch, ops, need_logits=False)
        _, fast = run_suffix(lm, suffix, ops)
        for site in ("neurons", "resid"):
            np.testing.assert_allclose(fast.captures[site].numpy(), full.captures[site].numpy(), atol=2e-5, rtol=1e-4)
    assert fast_batches >= 1
    batch = next(iter(iter_batches(lm.tokenizer, prompts, 3, "cpu")))
    _, full = run_forward(lm, batch, ops, need_logits=False)
    for _ in range(2):  # the prefix cache is never written into: the second use reads the same
        _, again = run_suffix(lm, suffix_batch(batch, prefix, pad), ops)
        np.testing.assert_allclose(again.captures["resid"].numpy(), full.captures["resid"].numpy(),
                                   atol=2e-5, rtol=1e-4)


def test_a_batch_that_does_not_start_with_the_prefix_falls_back(tiny_llama):
    prompts = build_prompts(TEXTS, PromptSpec(), tiny_llama.tokenizer)
    enc = tiny_llama.tokenizer([p.text for p in prompts], add_special_tokens=True)["input_ids"]
    prefix = prefix_state(tiny_llama.model, torch.tensor(enc[0][:6]))
    batch = next(iter(iter_batches(tiny_llama.tokenizer, prompts, 5, "cpu")))
    assert suffix_batch(batch, prefix, 0) is not None
    first = batch.input_ids.shape[1] - int(batch.attention_mask[0].sum())
    batch.input_ids[0, first + 2] += 1  # row 0 no longer starts with the shared tokens
    assert suffix_batch(batch, prefix, 0) is None
    long = prefix_state(tiny_llama.model, torch.tensor(enc[0][: min(len(e) for e in enc)]))
    assert suffix_batch(next(iter(iter_batches(tiny_llama.tokenizer, prompts, 5, "cpu"))), long, 0) is None
