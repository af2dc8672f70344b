"""The shared-prompt-prefix fast path reads what a full forward reads, on every tiny family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolens.engine.intervention import Capture, run_forward
from emolens.engine.prefix import prefix_cache
from emolens.engine.shared_prefix import (
    laid_out_prefix,
    prefix_state,
    run_suffix,
    shared_prefix_length,
    suffix_batch,
)
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


LONG = ["my dog died", "I won the prize after a very long and hard year of work, and then the whole town came to "
        "the square to cheer for me while my family watched from the balcony of our old house", "we met"]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_laid_out_prefix_equals_the_whole_prompt_prefix(family):
    """The clean prefix cache built on the shared tokens holds what a forward over the batch's own
    columns holds, in the batch's layout (left pads first), for every suffix length; a batch wider
    than a tiny gemma's 64-token sliding window included (distances are the batch's own)."""
    lm = load_model(f"tiny:{family}")
    prompts = build_prompts(TEXTS + LONG, PromptSpec(), lm.tokenizer)
    enc = lm.tokenizer([p.text for p in prompts], add_special_tokens=True)["input_ids"]
    prefix = prefix_state(lm.model, torch.tensor(enc[0][:shared_prefix_length(enc, keep=3)]))
    if prefix is None:
        pytest.skip(f"tiny:{family}'s cache cannot be shared (full forwards are used)")
    built = 0
    for batch in iter_batches(lm.tokenizer, prompts, 4, "cpu"):
        for m in (1, 3):
            want, got = prefix_cache(lm.model, batch, m), laid_out_prefix(lm.model, batch, prefix, m)
            if want is None:
                continue
            assert got is not None and got.get_seq_length() == want.get_seq_length()
            built += 1
            real = batch.attention_mask[:, :-m].bool()
            for a, b in zip(got.layers, want.layers, strict=True):
                cols = b.keys.shape[-2]  # a sliding layer keeps its last window - 1 columns
                keep = real[:, -cols:][:, None, :, None].expand_as(b.keys)  # pads' states are never read
                for x, y in ((a.keys, b.keys), (a.values, b.values)):
                    assert x.shape == y.shape
                    np.testing.assert_allclose(x[keep].numpy(), y[keep].numpy(), atol=2e-5, rtol=1e-4)
    assert built >= 4


def test_laid_out_prefix_refuses_rows_it_cannot_serve(tiny_llama):
    prompts = build_prompts(TEXTS, PromptSpec(), tiny_llama.tokenizer)
    enc = tiny_llama.tokenizer([p.text for p in prompts], add_special_tokens=True)["input_ids"]
    length = shared_prefix_length(enc)
    own = min(len(e) for e in enc) - length  # the shortest prompt's own tokens
    prefix = prefix_state(tiny_llama.model, torch.tensor(enc[0][:length]))
    batch = next(iter(iter_batches(tiny_llama.tokenizer, prompts, 5, "cpu")))
    assert laid_out_prefix(tiny_llama.model, batch, prefix, own) is not None
    assert laid_out_prefix(tiny_llama.model, batch, prefix, own + 1) is None  # a suffix reaching into shared tokens
    first = batch.input_ids.shape[1] - int(batch.attention_mask[0].sum())
    batch.input_ids[0, first + 2] += 1  # row 0 no longer starts with the shared tokens
    assert laid_out_prefix(tiny_llama.model, batch, prefix, 1) is None
