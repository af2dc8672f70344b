"""The KV-prefix fast path of the causal analyses equals full forwards (ablation, patching, knockout)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emolens.causal.ablation import ablate
from emolens.causal.common import make_batches, suffix_len
from emolens.causal.knockout import knockout
from emolens.causal.patching import patch, patch_condition
from emolens.data.loading import load_dataset
from emolens.engine import runner as engine_runner
from emolens.engine.ops import Capture
from emolens.engine.runner import ConditionRunner, path_name
from emolens.engine.windows import Window
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.model.loading import load_model
from emolens.model.tiny import TINY_FAMILIES
from emolens.readout import LabelReader

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WINDOWS = [Window(1, 3), Window(2, 1)]
SPAN5 = (-1, -2, -3, -4, -5)


@pytest.fixture(scope="module", params=["llama", "gemma3_text", "qwen2"])
def lm(request):
    return load_model(f"tiny:{request.param}")


@pytest.fixture(scope="module")
def ds():
    # 60..86 tokens: left-padded batches, longer than the tiny gemma's 64-token sliding window
    return load_dataset("stimuli").sample(6, seed=0)


class Built(list):
    """Suffix lengths whose prefix cache was built; ``shared``: those built on the template's shared tokens."""

    def __init__(self):
        super().__init__()
        self.shared: list[int] = []


@pytest.fixture
def suffixes(monkeypatch):
    """The suffix lengths whose prefix cache was actually built (directly, on the shared template
    tokens, or from a longer one)."""
    seen = Built()
    build, extend, laid = engine_runner.prefix_cache, engine_runner.extend_prefix, engine_runner.laid_out_prefix

    def spy_build(model, batch, m=1):
        cache = build(model, batch, m)
        seen.extend([m] if cache is not None else [])
        return cache

    def spy_laid(model, batch, shared, m=1):
        cache = laid(model, batch, shared, m)
        seen.extend([m] if cache is not None else [])
        seen.shared.extend([m] if cache is not None else [])
        return cache

    def spy_extend(model, batch, cache, m_from, m_to):
        assert m_from > m_to
        seen.append(m_to)
        return extend(model, batch, cache, m_from, m_to)

    monkeypatch.setattr(engine_runner, "prefix_cache", spy_build)
    monkeypatch.setattr(engine_runner, "extend_prefix", spy_extend)
    monkeypatch.setattr(engine_runner, "laid_out_prefix", spy_laid)
    return seen


def assert_same(fast, full):
    np.testing.assert_allclose(fast.clean_scores, full.clean_scores, atol=1e-5, rtol=0)
    for a, b in zip(fast.scores, full.scores, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        assert (a.argmax(1) == b.argmax(1)).all()
    clean = fast.clean_scores
    if fast.pairs is not None:  # patched scores are per pair: compare with the target's clean run
        clean = clean[fast.pairs["target_id"].map({i: k for k, i in enumerate(fast.ids)}).to_numpy()]
    assert max(np.abs(a - clean).max() for a in fast.scores) > 1e-3  # the interventions really act


def test_suffix_lengths():
    assert [suffix_len(p) for p in (-1, -3, SPAN5, 0, 2, "all", "context", (-1, 2))] == [1, 3, 5, 0, 0, 0, 0, 0]
    assert [path_name(m) for m in (0, 1, 5, True, False)] == ["full", "fast", "fast5", "fast", "full"]


def test_ablation_fast_equals_full(lm, ds, suffixes):
    kw = dict(sites=["attn", "resid"], windows=WINDOWS, positions=[-1, SPAN5], kinds=["zero", "mean"],
              batch_size=4, progress=False)
    fast = ablate(lm, ds, **kw)
    assert sorted(suffixes) == [1, 1, 5, 5]  # per batch and m, once: the clean pass and the conditions share it
    assert suffixes.shared == [5, 5]  # the longest on the template's shared tokens, the shorter from it
    full = ablate(lm, ds, fast=False, **kw)
    assert set(suffixes) == {1, 5}  # the full run built no prefix
    assert_same(fast, full)
    pd.testing.assert_frame_equal(fast.frame.drop(columns=["value", "ci_low", "ci_high"]),
                                  full.frame.drop(columns=["value", "ci_low", "ci_high"]))


def test_patching_fast_equals_full(lm, ds, suffixes):
    kw = dict(pairs=8, sites=["resid", "attn"], windows=WINDOWS, positions=[-1, -3], batch_size=4, progress=False)
    fast = patch(lm, ds, **kw)
    assert set(suffixes) == {1, 3}
    full = patch(lm, ds, fast=False, **kw)
    assert_same(fast, full)


@pytest.mark.parametrize("queries", [-1, [-1, -2]])
def test_knockout_fast_equals_full(lm, ds, suffixes, queries):
    kw = dict(keys=["context", "instruction"], queries=queries, windows=WINDOWS, batch_size=4, progress=False)
    fast = knockout(lm, ds, **kw)
    assert set(suffixes) == {1 if queries == -1 else 2}
    full = knockout(lm, ds, fast=False, **kw)
    assert_same(fast, full)


def test_self_patch_on_an_m_token_suffix_changes_nothing(lm, ds):
    prompts = build_prompts(ds.texts, PromptSpec(), lm.tokenizer)
    reader = LabelReader.build(lm.tokenizer, prompt_text=prompts[0].text, prefix=prompts[0].label_prefix)
    # no prefix kept: each is rebuilt, to the same bits; unstacked, so every forward has the clean run's
    # shapes -- the forwards still start at the window's first layer, replaying the clean hidden states
    scorer = ConditionRunner(lm, reader, prefix_bytes=0, stack_rows=0)
    stacked = ConditionRunner(lm, reader, prefix_bytes=0)  # three conditions in one forward of 3 x the batch
    batches = make_batches(lm, prompts, 4)
    windows = [WINDOWS[0], Window(2, 1)]  # starting at layer 0 and at layer 2
    for position in (-1, -4):
        m = suffix_len(position)
        caps = [Capture(s, layers="all", positions=[position], name=s) for s in ("resid", "attn", "mlp")]
        clean = scorer.clean(batches, len(prompts), (path_name(m),), {path_name(m): caps})
        src = np.arange(len(prompts))  # each target patched with its own activations
        conds = [patch_condition(site, w, position, None, clean.captures[path_name(m)], site, src, m)
                 for site in ("resid", "attn", "mlp") for w in windows]
        for got in scorer.conditions(batches, len(prompts), conds):
            assert np.array_equal(got, clean.scores[path_name(m)])
        for got in stacked.conditions(batches, len(prompts), conds):  # other matmul shapes: equal to rounding
            np.testing.assert_allclose(got, clean.scores[path_name(m)], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_stacked_conditions_from_the_first_edited_layer_equal_the_naive_path(family, ds):
    """Ablation and patching as the analyses run them (conditions stacked into shared forwards,
    each starting at its window's first layer from replayed clean hidden states, on the KV prefix)
    equal the naive path (one condition per forward, every layer, full prompts) on every tiny
    family; windows start at layers 0, 1 and 2, so 0, 1 and 2 layers are skipped."""
    lm = load_model(f"tiny:{family}")
    windows = [Window(1, 3), Window(1, 1), Window(2, 1)]
    kw = dict(sites=["attn", "mlp", "resid"], windows=windows, positions=[-1, (-1, -2)], kinds=["zero", "random"],
              batch_size=4, progress=False)
    fast, naive = ablate(lm, ds, **kw), ablate(lm, ds, fast=False, **kw)
    assert_same(fast, naive)
    assert fast.info["token_layers"] < naive.info["token_layers"] / 3
    kw = dict(sites=["resid", "mlp"], windows=windows, positions=[-1], pairs=6, batch_size=4, progress=False)
    assert_same(patch(lm, ds, **kw), patch(lm, ds, fast=False, **kw))
