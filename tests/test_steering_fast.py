"""The KV-prefix fast path of last-token steering sweeps equals the full-forward path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolens.engine.prefix import bytes_per_row, prefix_cache
from emolens.engine.runner import ConditionRunner, Prefix, repeat_batch
from emolens.inputs.batching import encode
from emolens.inputs.prompts import build_prompts
from emolens.labels import EMOTIONS
from emolens.model.loading import load_model
from emolens.model.tiny import TINY_FAMILIES
from emolens.readout import LabelReader
from emolens.steering.apply import steer_positions, steering_op
from emolens.steering.sweep import Condition, steered_label_scores, sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stim():
    from emolens.data.stimuli import load_stimuli

    return load_stimuli("all").sample(10, seed=0)


def _readers(lm, prompt):
    """The model's own label reader, and one where ``anger`` is scored as a two-token label."""
    single = LabelReader.build(lm.tokenizer, EMOTIONS, prompt.text, prompt.label_prefix)
    ids = [list(t) for t in single.token_ids]
    ids[0] = ids[0] + ids[1]
    return single, LabelReader(single.labels, ids, single_token=False)


def _conditions(lm, position="last", n=3, scale=3.0):
    g = torch.Generator().manual_seed(0)
    out = []
    for i, layers in enumerate([(0, 1, 2), (1,)] * n):
        vec = torch.randn(len(layers), lm.sites.d_model, generator=g) * scale
        out.append(Condition(f"v{i}", "real", layers[len(layers) // 2], layers, 1.0, position, vec))
    return out


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_fast_path_equals_full_forward_on_left_padded_batches(family, stim):
    """Last-token steering on the KV prefix, starting at the window's first layer (the ``(1,)``
    conditions replay layer 0), stacked and scored by the labels' head rows, equals full forwards
    through every layer with the full head, on every tiny family (gemma2's soft-capped logits,
    the gemmas' sliding windows included)."""
    lm = load_model(f"tiny:{family}")
    prompts = build_prompts(stim.texts, None, lm.tokenizer)
    lengths = [len(lm.tokenizer(p.text)["input_ids"]) for p in prompts]
    assert len(set(lengths)) > 3  # batches are left-padded
    assert max(lengths) > 64  # longer than the tiny gemmas' sliding window: the sliding cache is exercised
    conds = _conditions(lm)
    for reader in _readers(lm, prompts[0]):
        info: dict = {}
        # max_rows / fast_rows small enough that conditions are split over several stacked chunks
        fast_clean, fast = steered_label_scores(lm, prompts, reader, conds, batch_size=4, fast_rows=8, info=info)
        full_clean, full = steered_label_scores(lm, prompts, reader, conds, batch_size=4, max_rows=8, fast=False)
        assert info["fast_path"] == ["last"]
        for key in full_clean:
            np.testing.assert_allclose(fast_clean[key], full_clean[key], atol=1e-5, rtol=0)
            assert (fast_clean[key].argmax(1) == full_clean[key].argmax(1)).all()
        for a, b, c in zip(fast, full, conds, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
            assert (a.argmax(1) == b.argmax(1)).all()
            assert np.abs(a - fast_clean[(c.layers, "last")]).max() > 1e-2  # the steering really acts


def test_runner_suffix_path_matches_its_full_path_row_by_row(tiny_llama, stim):
    lm = tiny_llama
    prompts = build_prompts(stim.texts[:5], None, lm.tokenizer)
    batch = encode(lm.tokenizer, prompts)
    _, multi = _readers(lm, prompts[0])
    runner = ConditionRunner(lm, multi)
    value = torch.randn(3 * len(batch), 2, lm.sites.d_model, generator=torch.Generator().manual_seed(2)) * 5
    value[: len(batch)] = 0  # the first stacked copy is the clean run
    op = steering_op([0, 1], value, steer_positions("last"))
    full, _ = runner.run(repeat_batch(batch, 3), [op])
    prefix = prefix_cache(lm.model, batch)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in prefix.layers]
    fast, _ = runner.run(batch, [op], Prefix(prefix, 1), times=3)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
    plain, _ = runner.run(batch)
    torch.testing.assert_close(fast[: len(batch)], plain, atol=1e-5, rtol=0)
    # the shared prefix is never written to: a second run on it is bit-identical
    assert all(torch.equal(k, layer.keys) and torch.equal(v, layer.values)
               for (k, v), layer in zip(before, prefix.layers, strict=True))
    assert torch.equal(runner.run(batch, [op], Prefix(prefix, 1), times=3)[0], fast)
    # the counter sees the saving: the suffix step runs one token per row
    counted = runner.counter.token_layers
    runner.run(batch, [op], Prefix(prefix, 1), times=3)
    n_multi = sum(len(t) - 1 for t in multi.token_ids if len(t) > 1)
    assert runner.counter.token_layers - counted == 3 * len(batch) * (1 + n_multi) * lm.n_layers


def test_sweep_uses_fast_path_for_last_only_and_gives_the_same_table(tiny_llama, stim):
    lm = tiny_llama
    kw = dict(windows=[1], span=3, betas=[4.0], scale="unit", n_random=2, batch_size=4, holdout=None)
    fast = sweep(lm, stim, ["pleasantness+"], positions=["last", "prompt"], **kw)
    full = sweep(lm, stim, ["pleasantness+"], positions=["last", "prompt"], fast=False, **kw)
    assert fast.info["fast_path"] == ["last"] and full.info["fast_path"] == []
    a, b = fast.frame, full.frame
    assert a[["direction", "position", "metric", "label"]].equals(b[["direction", "position", "metric", "label"]])
    np.testing.assert_allclose(a["value"], b["value"], atol=1e-4)
    for x, y in zip(fast.scores, full.scores, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_a_cache_that_cannot_be_shared_falls_back_to_full_forwards(tiny_llama, stim, monkeypatch):
    lm = tiny_llama
    prompts = build_prompts(stim.texts[:4], None, lm.tokenizer)
    reader, _ = _readers(lm, prompts[0])
    conds = _conditions(lm, n=1)
    from emolens.engine import prefix as prefix
    from emolens.engine import shared_prefix

    for module in (prefix, shared_prefix):  # e.g. a static or linear-attention cache
        monkeypatch.setattr(module, "tile_cache", lambda cache, *args: None)
    assert prefix_cache(lm.model, encode(lm.tokenizer, prompts)) is None
    info: dict = {}
    clean, got = steered_label_scores(lm, prompts, reader, conds, batch_size=2, info=info)
    assert info["fast_path"] == []
    monkeypatch.undo()
    want_clean, want = steered_label_scores(lm, prompts, reader, conds, batch_size=2, fast=False)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)  # exactly the full path


def test_cache_budget_only_changes_how_many_conditions_share_a_forward(tiny_llama, stim):
    lm = tiny_llama
    prompts = build_prompts(stim.texts[:4], None, lm.tokenizer)
    reader, _ = _readers(lm, prompts[0])
    conds = _conditions(lm, n=2)
    prefix = prefix_cache(lm.model, encode(lm.tokenizer, prompts))
    layer = prefix.layers[0]
    assert bytes_per_row(prefix) == len(prefix.layers) * 2 * layer.keys[:1].numel() * 4
    wide_clean, wide = steered_label_scores(lm, prompts, reader, conds, batch_size=4)
    one_clean, one = steered_label_scores(lm, prompts, reader, conds, batch_size=4, fast_cache_bytes=1)
    for a, b in zip(one + list(one_clean.values()), wide + list(wide_clean.values()), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_label_head_is_taken_when_it_reproduces_the_model_and_dropped_when_not(family, stim):
    """Suffix steps score the labels from their head rows only when the first step's check against
    the model's own logits passes; a head that does not reproduce them (here: rescaled rows)
    is dropped for good, and the scores are still the full head's."""
    lm = load_model(f"tiny:{family}")
    prompts = build_prompts(stim.texts[:4], None, lm.tokenizer)
    reader, _ = _readers(lm, prompts[0])
    batch = encode(lm.tokenizer, prompts)
    prefix = Prefix(prefix_cache(lm.model, batch), 1)
    op = steering_op([1], torch.randn(2 * len(batch), 1, lm.sites.d_model, generator=torch.Generator().manual_seed(3)),
                     steer_positions("last"))
    want = torch.log_softmax(ConditionRunner(lm, reader).run(batch, [op], prefix, times=2)[0].double(), -1)
    fast = ConditionRunner(lm, reader, label_logits=True)
    got = fast.run(batch, [op], prefix, times=2)[0]
    assert fast.heads.usable is True
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    wrong = ConditionRunner(lm, reader, label_logits=True)
    with torch.no_grad():
        wrong.heads.rows.weight.mul_(1.5)  # rows that do not reproduce the model's head
    got = wrong.run(batch, [op], prefix, times=2)[0]
    assert wrong.heads.usable is False
    torch.testing.assert_close(torch.log_softmax(got.double(), -1), want, atol=1e-5, rtol=0)
