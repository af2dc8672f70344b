"""Clean reads (readout, extraction) on the shared template prefix equal full forwards on every tiny
family, do less model work, and are not used where they would not be exact."""

from __future__ import annotations

import numpy as np
import pytest

from emolens.activations.extract import extract
from emolens.data.corpus import EmotionDataset
from emolens.engine.accounting import WorkCounter
from emolens.engine.runner import ConditionRunner
from emolens.engine.scoring import LabelScorer
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.labels import EMOTIONS
from emolens.model.loading import load_model
from emolens.model.tiny import TINY_FAMILIES
from emolens.readout import readout

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = ["my dog died", "I won the prize after a very long and hard year of work", "a thief came",
         "the test failed again", "we met", "I saw my teacher on an aeroplane!", "I failed a maths test."]


def _dataset() -> EmotionDataset:
    return EmotionDataset(ids=[f"t{i}" for i in range(len(TEXTS))], texts=TEXTS,
                          labels=[EMOTIONS[i % len(EMOTIONS)] for i in range(len(TEXTS))],
                          appraisals=np.zeros((len(TEXTS), 21)), name="shared-set")


def _unshared(monkeypatch):
    monkeypatch.setattr(ConditionRunner, "share_prefix", lambda self, *a, **k: False)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_readout_and_extract_on_the_shared_prefix_equal_full_forwards(family, tmp_path, monkeypatch):
    lm = load_model(f"tiny:{family}")
    data = _dataset()
    kw = dict(sites="resid,attn", layers="all", positions="-1,-2", batch_size=3, chunk_size=4, progress=False,
              readout=True, dtype="float32")
    with WorkCounter.attach(lm).span() as fast_work:
        fast = readout(lm, data, PromptSpec(), batch_size=3, progress=False)
        fast_store = extract(lm, data, tmp_path / "fast", **kw)
    with monkeypatch.context() as m:
        _unshared(m)
        with WorkCounter.attach(lm).span() as full_work:
            full = readout(lm, data, PromptSpec(), batch_size=3, progress=False)
            full_store = extract(lm, data, tmp_path / "full", **kw)
    cols = [c for c in full.frame.columns if c.startswith("logp_")]
    np.testing.assert_allclose(fast.frame[cols].to_numpy(), full.frame[cols].to_numpy(), atol=2e-5, rtol=1e-4)
    assert (fast.frame.pred == full.frame.pred).all() and (fast.frame.top1 == full.frame.top1).all()
    for site in ("resid", "attn"):
        np.testing.assert_allclose(fast_store.read(site), full_store.read(site), atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(fast_store.readout()[cols].to_numpy(), full_store.readout()[cols].to_numpy(),
                               atol=2e-5, rtol=1e-4)
    if ConditionRunner(lm, None).share_prefix(_prompts(lm), keep=2):  # the template ran once: less work
        assert fast_work.token_layers < full_work.token_layers
    else:  # a cache that cannot be shared: the same full forwards
        assert fast_work.token_layers == full_work.token_layers


def _prompts(lm):
    return build_prompts(TEXTS, PromptSpec(), lm.tokenizer)


def test_named_spans_and_multi_token_labels_keep_full_forwards(tiny_llama, tmp_path):
    """A pooled span can reach into the shared tokens and a multi-token label continues the whole
    prompt's cache: neither reads on the shared prefix, so those stores equal the full path bit for bit."""
    data = _dataset()
    kw = dict(sites="resid", layers="all", batch_size=3, chunk_size=4, progress=False, dtype="float32")
    with WorkCounter.attach(tiny_llama).span() as span_work:
        extract(tiny_llama, data, tmp_path / "ctx", positions="-1,context", **kw)
    with WorkCounter.attach(tiny_llama).span() as last_work:
        extract(tiny_llama, data, tmp_path / "last", positions="-1", **kw)
    assert last_work.token_layers < span_work.token_layers
    prompts = _prompts(tiny_llama)
    multi = LabelScorer.build(tiny_llama.tokenizer, ["joy", "an unusual feeling of wonder"], prompts[0].text,
                              prompts[0].label_prefix)
    assert not multi.single_token
    assert ConditionRunner(tiny_llama, multi).share_prefix(prompts) is False
    assert ConditionRunner(tiny_llama, None).share_prefix(prompts) is True
