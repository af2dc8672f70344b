"""Readout and extraction run their clean forwards through the engine's ConditionRunner.

The runner's clean read of whole prompts must give exactly what the plain forward the readout
used to run gives (scores bit for bit, so predictions and the correct subset downstream analyses
use are unchanged); on the template's shared tokens (the default where it applies) the scores
equal it to float32 round-off with the same predictions; and extraction's captures must not
depend on whether a readout rides along.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolens.activations.extract import extract
from emolens.data.loading import load_dataset
from emolens.engine.ops import Capture
from emolens.engine.runner import ConditionRunner
from emolens.errors import EmolensError
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.model.loading import load_model
from emolens.readout import readout


def plain_readout(lm, prompts, reader, batch_size):
    """The readout's clean pass before it ran through the runner: one bare model call per batch."""
    scores = np.zeros((len(prompts), len(reader.labels)), np.float32)
    top = np.zeros(len(prompts), np.int64)
    for batch in iter_batches(lm.tokenizer, prompts, batch_size, lm.device, pack=True):  # as a readout batches
        cache = reader.new_cache(lm.model)
        with torch.no_grad():
            out = lm.model(**batch.model_inputs(), cache=cache, use_cache=cache is not None, logits_to_keep=1)
        scores[batch.indices] = reader.score(lm.model, batch, out.logits[:, -1], cache).cpu().numpy()
        top[batch.indices] = out.logits[:, -1].argmax(-1).cpu().numpy()
    return scores, top


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_readout_through_the_runner_equals_the_plain_forward(family, shared, monkeypatch):
    """Whole prompts: bit for bit. On the template's shared tokens (the default): equal to float32
    round-off (the suffix's matrix products have other shapes), with the same predictions, top-1
    tokens and correct subset."""
    if not shared:
        monkeypatch.setattr(ConditionRunner, "share_prefix", lambda self, *a, **k: False)
    lm = load_model(f"tiny:{family}")
    ds = load_dataset("stimuli").sample(26, seed=0)
    result = readout(lm, ds, batch_size=8, progress=False)
    prompts = build_prompts(ds.texts, PromptSpec(), lm.tokenizer)
    scores, top = plain_readout(lm, prompts, result.reader, 8)
    got = result.frame[[f"logp_{lab}" for lab in result.labels]].to_numpy()
    if shared:
        np.testing.assert_allclose(got, scores, atol=1e-5, rtol=0)
    else:
        np.testing.assert_array_equal(got, scores)  # bit for bit
    assert result.frame["top1"].tolist() == [lm.tokenizer.decode([int(t)]) for t in top]
    gold = np.array([result.labels.index(g) for g in ds.labels])
    assert result.correct_ids == [i for i, ok in zip(ds.ids, scores.argmax(1) == gold, strict=True) if ok]


def test_extraction_reads_the_same_with_and_without_a_readout(tiny_llama, tmp_path):
    ds = load_dataset("stimuli").sample(13, seed=0)
    with_readout = extract(tiny_llama, ds, tmp_path / "a", sites="resid", layers=[0, 1], positions=(-1, -2),
                           readout=True, dtype="float32", batch_size=4, progress=False)
    capture_only = extract(tiny_llama, ds, tmp_path / "b", sites="resid", layers=[0, 1], positions=(-1, -2),
                           dtype="float32", batch_size=4, progress=False)
    np.testing.assert_array_equal(np.asarray(with_readout.read("resid")), np.asarray(capture_only.read("resid")))
    ref = readout(tiny_llama, ds, batch_size=4, progress=False).frame
    stored = with_readout.readout()
    cols = [c for c in ref.columns if c.startswith("logp_")]
    np.testing.assert_array_equal(stored[cols].to_numpy(), ref[cols].to_numpy())
    assert stored["correct"].tolist() == ref["correct"].tolist()


def test_a_capture_only_read_stops_early_and_needs_ops(tiny_llama):
    prompts = build_prompts(["I won the prize."] * 2, PromptSpec(), tiny_llama.tokenizer)
    batch = next(iter(iter_batches(tiny_llama.tokenizer, prompts, 2, tiny_llama.device)))
    runner = ConditionRunner(tiny_llama, None)
    got = runner.read(batch, [Capture("resid", layers=[0], positions=-1),
                              Capture("resid", layers=[0], positions="context", pool="mean", name="ctx")])
    assert got.scores is None and got.top is None and got.captures["resid"].shape[:2] == (2, 1)
    assert got.captures["ctx"].shape[:2] == (2, 1)  # named spans come from the batch's span masks
    assert runner.counter.token_layers == batch.input_ids.numel()  # layer 0 only, then stopped
    with pytest.raises(EmolensError, match="nothing to compute"):
        runner.read(batch)
