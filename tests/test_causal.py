"""Causal analyses: windows, ablation, patching and attention-edge knockout on tiny models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emolens.causal.ablation import ablation_condition, derangement, norm_matched_noise
from emolens.causal.common import make_batches
from emolens.causal.patching import draw_pairs, normalised_difference, patch, patch_condition
from emolens.data.loading import load_dataset
from emolens.engine.intervention import Intervention
from emolens.engine.ops import Capture, Knockout, Set
from emolens.engine.positions import Positions
from emolens.engine.runner import ConditionRunner
from emolens.engine.windows import Window, layer_windows
from emolens.errors import EmolensError
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.readout import LabelReader

TEXTS = ["My dog died last week.", "I was recognised for doing well at work by my line manager today.",
         "I saw mouldy food.", "A stranger returned my lost wallet with all the cash still inside it.",
         "I failed the exam.", "My flight was cancelled and nobody told us why for hours."]


@pytest.fixture(scope="module")
def setup(tiny_llama):
    prompts = build_prompts(TEXTS, PromptSpec(), tiny_llama.tokenizer)
    reader = LabelReader.build(tiny_llama.tokenizer, prompt_text=prompts[0].text, prefix=prompts[0].label_prefix)
    return tiny_llama, prompts, reader


def test_windows():
    w = layer_windows(16, [1, 3, 5])
    assert [x.center for x in w if x.span == 3] == list(range(1, 15))
    assert [x.center for x in w if x.span == 5] == list(range(2, 14))
    assert Window(10, 5) in w
    assert Window.from_layers([3, 1, 2], 16) == Window(2, 3)
    for bad in ([2], [17]):
        with pytest.raises(EmolensError):
            layer_windows(16, bad)
    with pytest.raises(EmolensError):
        layer_windows(16, [3], centers=[0])
    assert [w.center for w in layer_windows(16, [3], centers=[0, 5, 15], strict=False)] == [5]
    assert Window(4, 3).layers == (3, 4, 5) and Window(4, 3).label == "3,4,5" and Window(4, 3).text == "3-5"


@pytest.mark.parametrize("span", [0, 2, 4, -1])
def test_window_rejects_even_and_empty_spans(span):
    with pytest.raises(EmolensError, match="odd") as info:
        Window(5, span)
    assert "\n" not in str(info.value) and "--" not in str(info.value)  # one line, no CLI wording


def test_window_bounds_and_explicit_layers():
    with pytest.raises(EmolensError, match="before layer 0"):
        Window(0, 3)
    with pytest.raises(EmolensError, match="outside"):
        Window(15, 3).check(16)
    assert Window(14, 3).check(16).layers == (13, 14, 15)
    for bad in ([1, 2, 3, 4], [1, 3, 5], [], [15, 16, 17]):
        with pytest.raises(EmolensError):
            Window.from_layers(bad, 16)


def test_self_patch_and_clean_set_are_bit_identical(setup):
    lm, prompts, reader = setup
    scorer = ConditionRunner(lm, reader, stack_rows=0)  # one condition a forward: the clean run's shapes, bit for bit
    batches = make_batches(lm, prompts, 4)
    for path, position in (("fast", -1), ("full", -2)):
        caps = [Capture(s, layers="all", positions=[position], name=s) for s in ("resid", "attn", "heads")]
        clean = scorer.clean(batches, len(prompts), (path,), {path: caps})
        src = np.arange(len(prompts))  # each target patched with its own activations
        conds = [patch_condition(site, Window(1, 3), position, head, clean.captures[path], site, src,
                                 path == "fast") for site, head in (("resid", None), ("attn", None), ("heads", 1))]
        for got in scorer.conditions(batches, len(prompts), conds):
            assert np.array_equal(got, clean.scores[path])


def test_fast_path_matches_full_forward(setup):
    lm, prompts, reader = setup
    scorer = ConditionRunner(lm, reader)
    batches = make_batches(lm, prompts, 3)
    clean = scorer.clean(batches, len(prompts), ("fast", "full"))
    np.testing.assert_allclose(clean.scores["fast"], clean.scores["full"], atol=1e-4)
    w = Window(1, 1)
    conds = [ablation_condition("zero", "attn", w, -1, None, clean, "", None, 0, fast) for fast in (True, False)]
    fast, full = scorer.conditions(batches, len(prompts), conds)
    np.testing.assert_allclose(fast, full, atol=1e-4)
    assert not np.allclose(fast, clean.scores["fast"], atol=1e-6)


def test_resid_last_layer_transfers_and_batching_is_invariant(setup):
    lm, prompts, reader = setup
    scorer = ConditionRunner(lm, reader)
    n = len(prompts)
    clean = scorer.clean(make_batches(lm, prompts, 4), n, ("fast",),
                         {"fast": [Capture("resid", layers="all", positions=[-1], name="resid")]})
    src = np.roll(np.arange(n), 1)
    last = Window(lm.n_layers - 1, 1)
    out = {}
    for bs in (1, 4):
        cond = patch_condition("resid", last, -1, None, clean.captures["fast"], "resid", src, True)
        out[bs] = scorer.conditions(make_batches(lm, prompts, bs), n, [cond])[0]
    np.testing.assert_allclose(out[4], out[1], atol=1e-5)  # batched = one pair at a time
    np.testing.assert_allclose(out[4], clean.scores["fast"][src], atol=1e-5)  # the source's own readout
    assert (out[4].argmax(1) == clean.scores["fast"][src].argmax(1)).all()


def test_patch_metrics_and_pairs(tiny_llama, tmp_path):
    ds = load_dataset("stimuli").sample(24, seed=1)
    pairs = draw_pairs(ds.ids, ds.labels, 12, seed=5)
    assert pairs.equals(draw_pairs(ds.ids, ds.labels, 12, seed=5))
    assert not pairs.equals(draw_pairs(ds.ids, ds.labels, 12, seed=6))
    assert (pairs["source_label"] != pairs["target_label"]).all()
    pairs.to_parquet(tmp_path / "pairs.parquet")
    assert pd.read_parquet(tmp_path / "pairs.parquet").equals(pairs)
    with pytest.raises(EmolensError):
        draw_pairs(["a", "b"], ["joy", "joy"], 3)
    last = Window(tiny_llama.n_layers - 1, 1)
    res = patch(tiny_llama, ds, pairs=pairs, sites=["resid"], windows=[last], batch_size=6, progress=False)
    frame = res.frame.set_index("metric")
    if frame.loc["transfer", "n"] > 0:
        assert frame.loc["transfer", "value"] == 1.0
        assert frame.loc["normalised_logit_diff", "value"] == pytest.approx(1.0, abs=1e-3)
    # ND is 0 at the target's clean scores and 1 at the source's
    src, tgt = np.array([[0.0, -1.0, -3.0]]), np.array([[-2.0, 0.0, -3.0]])
    s, t = np.array([0]), np.array([1])
    assert normalised_difference(tgt, src, tgt, s, t)[0] == 0.0
    assert normalised_difference(src, src, tgt, s, t)[0] == 1.0


def test_mean_and_random_ablation(setup):
    lm, prompts, reader = setup
    scorer = ConditionRunner(lm, reader)
    batches = make_batches(lm, prompts, 4)
    clean = scorer.clean(batches, len(prompts), ("fast",), {"fast": [Capture("mlp", layers="all", positions=[-1],
                                                                            name="k")]})
    w = Window(1, 3)
    cond = ablation_condition("mean", "mlp", w, -1, None, clean, "k", None, 0, True)
    op = cond.build(batches[0])[0]
    assert torch.allclose(op.value, clean.captures["fast"]["k"].mean(0))  # the reference mean, per layer
    x = torch.randn(5, 2, 64) * 3
    rows = np.arange(5)
    noise = norm_matched_noise(x, rows, "c")
    torch.testing.assert_close(noise.norm(dim=-1), x.norm(dim=-1))
    assert torch.equal(noise, norm_matched_noise(x, rows, "c"))
    assert not torch.equal(noise, norm_matched_noise(x, rows, "other"))
    assert torch.equal(noise[2:], norm_matched_noise(x[2:], rows[2:], "c"))  # batch-independent
    perm = derangement(7, 0)
    assert sorted(perm) == list(range(7)) and (perm != np.arange(7)).all()
    # Set to the clean value changes nothing; zero ablation does
    value = clean.captures["fast"]["k"][:, list(w.layers)]
    clean_set = ablation_condition("zero", "mlp", w, -1, None, clean, "k", None, 0, True)
    clean_set.build = lambda b: [Set("mlp", layers=list(w.layers), positions=[-1], value=value[b.indices],
                                     dims="blp")]
    got = scorer.conditions(batches, len(prompts), [clean_set])[0]
    assert np.array_equal(got, clean.scores["fast"])


# ------------------------------------------------------------------------------ knockout

_REF_BLOCK: dict = {}


def _ref_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention that zeroes the blocked weights and renormalises rows (the definition)."""
    rep = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    w = query @ key.transpose(-1, -2) * scaling
    if attention_mask is not None:
        w = w + attention_mask[..., : key.shape[-2]]
    w = torch.softmax(w.float(), -1)
    block = _REF_BLOCK.get(id(module))
    if block is not None:
        w = w.masked_fill(block, 0.0)
        w = w / w.sum(-1, keepdim=True)
    return (w.to(value.dtype) @ value).transpose(1, 2).contiguous(), w


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2", "qwen2"])
def test_knockout_equals_zero_and_renormalise(family):
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    from emolens.model.loading import load_model
    from emolens.model.sites import resolve_sites
    from emolens.model.tiny import tiny_model

    AttentionInterface.register("emolens_ref", _ref_attention)
    AttentionMaskInterface.register("emolens_ref", eager_mask)
    lm = load_model(f"tiny:{family}", validate=False)
    eager = load_model(f"tiny:{family}", attn_implementation="eager", validate=False)
    ref = tiny_model(family, attn_implementation="emolens_ref")
    ref_sites = resolve_sites(ref)
    prompts = build_prompts(TEXTS[:3], PromptSpec(), lm.tokenizer)
    batch = make_batches(lm, prompts, 3)[0]  # padded rows
    inputs = batch.model_inputs()
    layers, heads = [1, 2], [0, 2]
    spans = batch.span_masks
    plain = lm.model(**inputs).logits[:, -1]
    for model in (lm, eager):
        with Intervention(model, Knockout("attn", layers=layers, positions=-1, keys="none"), spans=spans):
            assert torch.equal(model.model(**inputs).logits[:, -1], model.model(**inputs).logits[:, -1])
    with Intervention(lm, Knockout("attn", layers=layers, positions=-1, keys="none"), spans=spans):
        assert torch.equal(lm.model(**inputs).logits[:, -1], plain)  # empty knockout: bit-identical
    ko = Knockout("attn", layers=layers, positions=-1, keys="context", heads=heads)
    with Intervention(lm, ko, spans=spans):
        got_sdpa = lm.model(**inputs).logits[:, -1]
    with Intervention(eager, ko, spans=spans):
        got_eager = eager.model(**inputs).logits[:, -1]
    T = batch.input_ids.shape[1]
    am = batch.attention_mask
    head_mask = torch.zeros(lm.sites.n_heads, dtype=torch.bool)
    head_mask[heads] = True
    block = ko.block(Positions.of(-1).mask(am), Positions.of("context").mask(am, spans), T, T, head_mask,
                     batch.input_ids.device)
    assert bool(block.any())
    _REF_BLOCK.clear()
    for layer in layers:
        _REF_BLOCK[id(ref_sites.point("attn", layer).module)] = block
    try:
        want = ref(**inputs).logits[:, -1]
    finally:
        _REF_BLOCK.clear()
    assert not torch.allclose(got_sdpa, plain, atol=1e-4)
    torch.testing.assert_close(got_sdpa, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_eager, want, atol=1e-4, rtol=1e-4)


def test_knockout_fast_path_and_errors(setup):
    from emolens.causal.knockout import knockout

    lm, prompts, reader = setup
    ds = load_dataset("stimuli").sample(6, seed=0)
    w = [Window(1, 3)]
    fast = knockout(lm, ds, keys=["context"], windows=w, batch_size=3, progress=False)
    full = knockout(lm, ds, keys=["context"], windows=w, batch_size=3, fast=False, progress=False)
    np.testing.assert_allclose(fast.scores[0], full.scores[0], atol=1e-4)
    batch = make_batches(lm, prompts, 2)[0]
    starve = Intervention(lm, Knockout("attn", layers=[0], positions=-1, keys="all"))
    with pytest.raises(EmolensError, match="no key"), starve:  # blocking every key leaves the query nothing
        lm.model(**batch.model_inputs())
    with pytest.raises(EmolensError, match="out of range"):
        Intervention(lm, Knockout("attn", layers=[0], positions=-1, keys="context", heads=[9]), spans=batch.span_masks)
    with pytest.raises(EmolensError, match="site 'attn'"):
        Knockout("resid", layers=[0], keys="context")


@pytest.mark.real_model
def test_real_model_noop_knockout_and_resid_transfer(real_model):
    lm = real_model
    prompts = build_prompts(TEXTS[:4], PromptSpec(), lm.tokenizer)
    reader = LabelReader.build(lm.tokenizer, prompt_text=prompts[0].text, prefix=prompts[0].label_prefix)
    scorer = ConditionRunner(lm, reader)
    batches = make_batches(lm, prompts, 4)
    clean = scorer.clean(batches, 4, ("fast",), {"fast": [Capture("resid", layers="all", positions=[-1],
                                                                 name="resid")]})
    batch = batches[0]
    prefix = scorer.prefix(batch)
    empty = Knockout("attn", layers=[5, 6], positions=-1, keys="none")
    got, _ = scorer.run(batch, [empty], prefix=prefix)
    assert np.array_equal(got.numpy(), clean.scores["fast"][batch.indices])
    src = np.roll(np.arange(4), 1)
    last = Window(lm.n_layers - 1, 1)
    cond = patch_condition("resid", last, -1, None, clean.captures["fast"], "resid", src, True)
    out = scorer.conditions(batches, 4, [cond])[0]
    assert (out.argmax(1) == clean.scores["fast"][src].argmax(1)).all()


def test_cli_knockout_and_errors(tmp_path, capsys):
    from emolens.cli.app import main

    out = tmp_path / "ko"
    main(["knockout", "--model", "tiny:llama", "--data", "stimuli", "--items", "all", "--limit", "6", "--span", "3",
          "--keys", "context", "--out", str(out)])
    frame = pd.read_parquet(out / "knockout.parquet")
    assert {"analysis", "window_center", "metric", "ci_low", "n", "model"} <= set(frame.columns)
    assert (out / "run.json").exists()
    for args in (["ablate", "--sites", "foo"], ["patch", "--span", "9"], ["patch", "--pairs", "1", "--limit", "1"]):
        with pytest.raises(SystemExit) as exc:
            main([*args, "--model", "tiny:llama", "--data", "stimuli", "--items", "all",
                  "--out", str(tmp_path / "bad")])
        assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
