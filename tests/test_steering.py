"""Steering: exactness of the hooks, direction algebra, scaling, controls, scores and theory alignment."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from emolens.engine.intervention import Intervention
from emolens.engine.ops import Capture
from emolens.engine.runner import ConditionRunner
from emolens.engine.windows import Window, layer_windows
from emolens.errors import EmolensError
from emolens.inputs.batching import encode
from emolens.inputs.prompts import build_prompts
from emolens.labels import EMOTIONS
from emolens.readout import LabelReader
from emolens.steering import theory
from emolens.steering.apply import mean_resid_norm, scaled, steer_positions, steering_op
from emolens.steering.directions import (
    ConceptBank,
    Term,
    bank_from_file,
    capture_resid,
    combine,
    compute_bank,
    diffmean_directions,
    parse_direction,
    pca_directions,
    random_unit,
)
from emolens.steering.generation import degenerate, fluency_flags, generate_steered, text_stats
from emolens.steering.sweep import (
    COLUMNS,
    N_RANDOM,
    build_conditions,
    fit_relation,
    fit_split,
    outcome_rows,
    success_score,
    sweep,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _label_scores(lm, reader, batch, layers=None, value=None, positions=None):
    """Label scores of ``batch`` with ``value`` added at ``positions`` (none: the clean run), full forwards."""
    ops = [] if value is None else [steering_op(layers, value, positions)]
    return ConditionRunner(lm, reader).run(batch, ops)[0]


@pytest.fixture(scope="module")
def stim():
    from emolens.data.stimuli import load_stimuli

    return load_stimuli("all").sample(16, seed=0)


@pytest.fixture(scope="module")
def batch(tiny_llama, stim):
    return encode(tiny_llama.tokenizer, build_prompts(stim.texts[:6], None, tiny_llama.tokenizer))


def _logits(lm, batch, op=None):
    with torch.no_grad():
        if op is None:
            return lm.model(**batch.model_inputs()).logits
        with Intervention(lm, [op], batch_mask=batch.attention_mask):
            return lm.model(**batch.model_inputs()).logits


def _hook_ids(model):
    return {(name, kind, key) for name, m in model.named_modules()
            for kind, hooks in (("fwd", m._forward_hooks), ("pre", m._forward_pre_hooks)) for key in hooks}


def _vec(lm, n_layers, scale=30.0, seed=1):
    return torch.randn(n_layers, lm.sites.d_model, generator=torch.Generator().manual_seed(seed)) * scale


# ---------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("position", ["last", "prompt"])
def test_beta_zero_is_bit_identical_and_removal_restores(tiny_llama, batch, position):
    lm = tiny_llama
    # Other tests share this model and transformers may have installed its own permanent hooks
    # (output_hidden_states does); what matters is that steering leaves none of its own behind.
    hooks_before = _hook_ids(lm.model)
    clean = _logits(lm, batch)
    mask = steer_positions(position).mask(batch.attention_mask)
    zero = scaled(torch.ones(2, lm.sites.d_model) / lm.sites.d_model ** 0.5, 0.0)
    assert torch.equal(_logits(lm, batch, steering_op([0, 1], zero, mask)), clean)
    steered = _logits(lm, batch, steering_op([0, 1], _vec(lm, 2), mask))
    assert not torch.allclose(steered, clean)
    assert torch.equal(_logits(lm, batch), clean)  # hooks gone: the model is exactly restored
    assert _hook_ids(lm.model) == hooks_before
    reader = LabelReader.build(lm.tokenizer, EMOTIONS, "Context: x Answer:")
    base = _label_scores(lm, reader, batch)
    z = torch.zeros(len(batch), 2, lm.sites.d_model)
    assert torch.equal(_label_scores(lm, reader, batch, [0, 1], z, mask), base)


def test_multi_token_labels_are_steered_at_the_prompt_only(tiny_llama, batch):
    lm = tiny_llama
    single = LabelReader.build(lm.tokenizer, EMOTIONS, "Context: x Answer:")
    ids = [list(t) for t in single.token_ids]
    ids[0] = ids[0] + ids[1]  # "anger" scored as a two-token label
    reader = LabelReader(single.labels, ids, single_token=False)
    with torch.no_grad():
        last = lm.model(**batch.model_inputs(), logits_to_keep=1).logits[:, -1]
        want = reader.score(lm.model, batch, last)
    base = _label_scores(lm, reader, batch)
    assert torch.allclose(base, want, atol=1e-5)
    mask = steer_positions("last").mask(batch.attention_mask)
    z = torch.zeros(len(batch), 2, lm.sites.d_model)
    assert torch.equal(_label_scores(lm, reader, batch, [0, 1], z, mask), base)
    v = _vec(lm, 2)[None].expand(len(batch), -1, -1)
    steered = _label_scores(lm, reader, batch, [0, 1], v, mask)
    assert not torch.allclose(steered[:, 0], base[:, 0])


def test_window_leaves_earlier_activations_bit_identical(tiny_llama, batch):
    lm = tiny_llama
    caps = [Capture("embed", layers=0, positions="all", pool="mean", name="e"),
            Capture("resid", layers=[0], positions=[-1, -2, 0], name="r0"),
            Capture("attn", layers=[0, 1], positions=[-1, -2], name="a"),
            Capture("resid", layers=[1, 2], positions=[-1], name="late")]
    mask = steer_positions("prompt").mask(batch.attention_mask)
    with torch.no_grad():
        with Intervention(lm, caps, batch_mask=batch.attention_mask) as clean:
            lm.model(**batch.model_inputs())
        with Intervention(lm, [steering_op([1, 2], _vec(lm, 2), mask), *caps],
                          batch_mask=batch.attention_mask) as steered:
            lm.model(**batch.model_inputs())
    for key in ("e", "r0", "a"):  # layer 1's attention runs before layer 1's output is steered
        assert torch.equal(clean.captures[key], steered.captures[key]), key
    assert not torch.allclose(clean.captures["late"], steered.captures["late"])


def test_generation_beta_zero_equals_plain_and_steering_changes_it(tiny_llama, stim):
    lm = tiny_llama
    texts = stim.texts[:3]
    plain = generate_steered(lm, texts, max_new_tokens=5)
    for position in ("generated", "last", "prompt"):
        same = generate_steered(lm, texts, [0, 1], torch.zeros(2, lm.sites.d_model), position, 5)
        assert same == plain
    assert generate_steered(lm, texts, [0, 1], _vec(lm, 2, 80.0), "generated", 5) != plain
    assert generate_steered(lm, texts, max_new_tokens=5) == plain


# ---------------------------------------------------------------------------------------------- directions


def _bank(n_layers=2, names=("a", "b", "c", "d"), d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ConceptBank(list(range(n_layers)), list(names), torch.randn(n_layers, len(names), d, generator=g),
                          "diffmean")


def test_partialled_direction_is_orthogonal_to_fixed_span_and_paper_variant_is_plain_sum():
    bank = _bank()
    terms = parse_direction("a+,b-", bank.names)
    u = combine(bank, terms, [0, 1], partial=True, fixed=["c", "d"])
    fixed = torch.stack([bank.get("c"), bank.get("d")], 1)  # [L, 2, d]
    assert torch.allclose(u.norm(dim=-1), torch.ones(2), atol=1e-6)
    assert torch.einsum("lkd,ld->lk", fixed, u).abs().max() < 1e-5
    plain = combine(bank, terms, [0, 1], partial=False, fixed=["c", "d"])
    want = bank.get("a") - bank.get("b")
    assert torch.allclose(plain, want / want.norm(dim=-1, keepdim=True), atol=1e-6)
    # a rank-deficient fixed set (c, d and c + d) is handled by the pseudo-inverse
    bank.vectors[:, 3] = bank.vectors[:, 2] * 2.0
    u2 = combine(bank, terms, [0, 1], partial=True, fixed=["c", "d"])
    assert torch.einsum("ld,ld->l", bank.get("c"), u2).abs().max() < 1e-5
    with pytest.raises(EmolensError, match="zero or undefined"):
        combine(bank, parse_direction("c+", bank.names), [0], partial=True, fixed=["d"])


def test_diffmean_equals_direct_computation_and_pca_sign():
    g = np.random.default_rng(0)
    X = torch.from_numpy(g.normal(size=(40, 2, 8))).float()
    R = g.integers(1, 6, size=(40, 2)).astype(float)
    R[3, 0] = np.nan
    y = g.integers(0, 3, size=40)
    y[5] = -1
    V = diffmean_directions(X, R, y, n_classes=3)
    assert V.shape == (2, 5, 8)
    for j in range(2):
        hi, lo = R[:, j] >= 4, R[:, j] <= 2
        want = X[torch.from_numpy(hi)].mean(0) - X[torch.from_numpy(lo)].mean(0)
        assert torch.allclose(V[:, j], want, atol=1e-5)
    for k in range(3):
        inn, out = y == k, (y != k) & (y >= 0)
        want = X[torch.from_numpy(inn)].mean(0) - X[torch.from_numpy(out)].mean(0)
        assert torch.allclose(V[:, 2 + k], want, atol=1e-5)
    shift = torch.zeros(8)
    shift[0] = 5.0
    Xs = X + torch.from_numpy(R[:, 0:1] >= 4)[:, :, None].float() * shift
    P = pca_directions(Xs, R[:, :1])
    assert (P[:, 0, 0] > 0).all() and (P[:, 0, 0].abs() / P[:, 0].norm(dim=-1) > 0.8).all()


def test_relative_scale_has_intended_norm(tiny_llama, stim):
    lm = tiny_llama
    prompts = build_prompts(stim.texts[:5], None, lm.tokenizer)
    b = encode(lm.tokenizer, prompts)
    with torch.no_grad():
        hs = lm.model(**b.model_inputs(), output_hidden_states=True).hidden_states
    for position in ("last", "prompt"):
        ref = mean_resid_norm(lm, prompts, [0, 1], position, batch_size=2)
        m = steer_positions(position).mask(b.attention_mask)
        want = torch.stack([hs[layer + 1][m].norm(dim=-1).mean() for layer in (0, 1)])
        assert torch.allclose(ref, want, rtol=1e-4)
        unit = random_unit(2, lm.sites.d_model, 3)
        v = scaled(unit, 0.5, "relative", ref)
        assert torch.allclose(v.norm(dim=-1), 0.5 * ref, rtol=1e-5)
    first = steer_positions("prompt").mask(b.attention_mask)
    rows = torch.arange(len(b))
    assert not first[rows, b.attention_mask.int().argmax(1)].any()  # the sink is never steered


def test_controls_are_norm_matched(tiny_llama, stim):
    lm = tiny_llama
    X = torch.randn(len(stim), 3, lm.sites.d_model, generator=torch.Generator().manual_seed(0))
    bank = compute_bank(X, [0, 1, 2], stim)
    ref = {"last": torch.tensor([2.0, 3.0, 5.0])}
    conds = build_conditions(lm, bank, ["pleasantness+,other_responsblt-"], [0, 1], 1, [1.0, 2.0], ["last"],
                                "relative", ref, n_random=3)
    kinds = {c.kind for c in conds}
    assert kinds == {"real", "random", "specificity"}
    for window in (0, 1):
        for beta in (1.0, 2.0):
            group = [c for c in conds if c.window == window and c.beta == beta]
            real = next(c for c in group if c.kind == "real").vector.norm(dim=-1)
            assert torch.allclose(real, beta * ref["last"][[window]], rtol=1e-5)
            for c in group:
                assert torch.allclose(c.vector.norm(dim=-1), real, rtol=1e-5), c.direction
            rnd = [c.vector for c in group if c.kind == "random"]
            assert len(rnd) == 3 and not torch.allclose(rnd[0], rnd[1])
    spec = next(c for c in conds if c.kind == "specificity")
    assert spec.direction == "control:familiarity+"
    # a fit split with no usable familiarity direction: the automatic control skips to a defined one
    bank.vectors[:, bank.names.index("familiarity")] = float("nan")
    conds = build_conditions(lm, bank, ["pleasantness+"], [0], 1, [1.0], ["last"], "relative", ref, n_random=0)
    spec = next(c for c in conds if c.kind == "specificity")
    assert spec.direction != "control:familiarity+" and bank.is_defined(spec.direction[len("control:"):-1])
    with pytest.raises(EmolensError, match="familiarity"):  # asked for by name, it is still an error
        build_conditions(lm, bank, ["pleasantness+"], [0], 1, [1.0], ["last"], "relative", ref, n_random=0,
                            control="familiarity")


def test_success_score_formula():
    got = success_score([0.2, 0.5, 0.3, 0.0, 1.0, 0.4], [0.6, 0.25, 0.3, 1.0, 0.0, 0.4])
    assert np.allclose(got, [0.5, -0.5, 0.0, 1.0, -1.0, 0.0])
    clean = np.log(np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]))
    steered = clean.copy()
    steered[:, 2] += 5  # everything flips to label c
    rows = pd.DataFrame(outcome_rows(clean, steered, ["a", "b", "c"], n_boot=50))
    s = rows[rows.metric == "success"].set_index("label")["value"]
    assert s["c"] == pytest.approx(1.0) and s["a"] == pytest.approx(-1.0)
    assert rows[rows.metric == "flip_rate"]["value"].item() == pytest.approx(0.75)
    assert (rows[rows.metric == "delta_logp"].set_index("label")["value"]["c"] > 0)


# ---------------------------------------------------------------------------------------------- theory


def test_theory_alignment_identity_and_permutation():
    g = np.random.default_rng(0)
    ref = pd.DataFrame(g.normal(size=(3, 13)), index=["p+", "o+", "s+"], columns=list(EMOTIONS))
    same = theory.alignment(ref.copy(), ref)
    assert same.score == pytest.approx(1.0) and same.spearman == pytest.approx(1.0)
    assert same.sign_agreement == 1.0
    perm = ref.copy()
    perm[:] = ref.to_numpy()[:, g.permutation(13)]
    worse = theory.alignment(perm, ref)
    assert worse.score < same.score and worse.sign_agreement < 1.0
    rnd = pd.DataFrame(g.normal(size=(9, 13)), columns=list(EMOTIONS))
    with_null = theory.alignment(ref.copy(), ref, rnd)
    assert with_null.p_value == pytest.approx(0.1) and with_null.n_random == 9
    assert len(with_null.cells) == 3 * 13


def test_rating_profile_and_combination_reference(stim):
    prof = theory.rating_profile(stim, ["pleasantness", "other_responsblt"])
    assert list(prof.columns) == list(EMOTIONS)
    joy = [i for i, lab in enumerate(stim.labels) if lab == "joy"]
    if joy:
        r = stim.appraisal("pleasantness")
        z = (r - r.mean()) / r.std()
        assert prof.loc["pleasantness", "joy"] == pytest.approx(z[joy].mean(), rel=1e-5)
    combo = theory.reference_for([("pleasantness", 1.0), ("other_responsblt", -1.0)], prof)
    assert np.allclose(combo.fillna(0), (prof.loc["pleasantness"] - prof.loc["other_responsblt"]).fillna(0))


# ---------------------------------------------------------------------------------------------- input checks


def test_bad_inputs_are_one_line_errors():
    names = ["pleasantness", "other_responsblt", "joy"]
    assert parse_direction("pleasantness+, other_responsblt-", names) == (
        Term("pleasantness", 1.0), Term("other_responsblt", -1.0))
    assert parse_direction("joy", names) == (Term("joy", 1.0),)
    for bad, match in (("pleasentness+", "unknown appraisal"), ("pleasantness*", "bad direction term"),
                       ("pleasantness++", "bad direction term"), ("", "empty"), ("joy+,joy-", "twice")):
        with pytest.raises(EmolensError, match=match) as info:
            parse_direction(bad, names)
        assert "\n" not in str(info.value)
    with pytest.raises(EmolensError, match="out of range"):
        layer_windows(6, [3], "0,5")
    assert [w.center for w in layer_windows(6, [3], "auto")] == [1, 2, 3, 4]
    auto = [w.center for w in layer_windows(30, [3], "auto")]
    assert auto == sorted(set(auto)) and len(auto) == 8
    assert Window(4, 3).layers == (3, 4, 5)


# ---------------------------------------------------------------------------------------------- end to end


def test_sweep_and_cli_end_to_end(tmp_path, stim):
    from emolens.cli.app import main

    out = tmp_path / "run"
    main(["steer", "--model", "tiny:llama", "--data", "stimuli", "--limit", "12", "--direction",
          "pleasantness+;other_responsblt-", "--windows", "1", "--span", "3", "--beta", "2,8", "--scale",
          "relative", "--positions", "last,generated", "--n-random", "3", "--n-emotion-null", "2", "--generate", "1",
          "--max-new-tokens", "4", "--out", str(out)])
    frame = pd.read_parquet(out / "steering.parquet")
    assert set(COLUMNS) <= set(frame.columns)
    assert set(frame.kind) == {"real", "random", "specificity", "emotion_null"}
    assert sorted(frame.beta.unique()) == [0.0, 2.0, 8.0]
    zero = frame[(frame.beta == 0) & (frame.metric == "flip_rate")]
    assert (zero.value == 0).all()
    align = pd.read_parquet(out / "alignment.parquet")
    assert {"alignment", "spearman", "sign_agreement"} <= set(align.metric)
    assert (align[align.metric == "alignment"].n_random == 3).all()
    assert set(frame.fit) == {"heldout"} and set(align.fit) == {"heldout"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fit"] == "heldout" and summary["fast_path"] == ["last"] and summary["random_seeds"] == [0, 1, 2]
    assert not set(summary["fit_ids"]) & set(summary["steered_ids"]) and (frame.n == 6).all()
    gens = pd.read_parquet(out / "generations.parquet").to_dict("records")
    assert gens[0]["direction"] == "clean" and {"continuation", "emotion", "mean_logp", "degenerate", "guard_flags",
                                                "distinct2"} <= set(gens[0])
    assert gens[0]["id"] in summary["steered_ids"]  # generations continue held-out items
    assert {g["position"] for g in gens[1:]} == {"generated"}  # steering every generated token by default
    window, beta = summary["generation_window_beta"]
    assert all(g["window"] == window and g["beta"] == beta for g in gens[1:])
    assert (out / "dose_response.png").exists() and (out / "labels_pleasantnessp.png").exists()
    # A run's saved directions load back as the same bank, so they can steer another run (--acts).
    bank = bank_from_file(out / "directions.safetensors", "diffmean")
    assert "pleasantness" in bank.names and bank.vectors.shape[:2] == (len(bank.layers), len(bank.names))
    assert torch.isfinite(combine(bank, parse_direction("pleasantness+", bank.names), bank.layers)).all()
    with pytest.raises(SystemExit) as info:
        main(["steer", "--model", "tiny:llama", "--data", "stimuli", "--direction", "pleasantness+",
              "--windows", "9", "--out", str(tmp_path / "bad")])
    assert info.value.code == 2
    # the paper's protocol: fit and steer every item, full forwards; --gen-position last
    out2 = tmp_path / "paper"
    main(["steer", "--model", "tiny:llama", "--data", "stimuli", "--limit", "12", "--direction", "pleasantness+",
          "--windows", "1", "--beta", "8", "--n-random", "2", "--holdout", "0", "--no-fast", "--generate", "1",
          "--gen-position", "last", "--gen-window", "middle", "--max-new-tokens", "3", "--out", str(out2)])
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["fit"] == "all" and summary["fast_path"] == [] and summary["n_items"] == 12
    gens = pd.read_parquet(out2 / "generations.parquet").to_dict("records")
    assert {g["position"] for g in gens[1:]} == {"last"}
    # directions from a file were fitted elsewhere: every item is steered and the table says "given"
    out3 = tmp_path / "given"
    main(["steer", "--model", "tiny:llama", "--data", "stimuli", "--limit", "12", "--direction", "pleasantness+",
          "--windows", "1", "--beta", "8", "--n-random", "2", "--acts", str(out / "directions.safetensors"),
          "--out", str(out3)])
    summary = json.loads((out3 / "summary.json").read_text())
    assert summary["fit"] == "given" and summary["n_items"] == 12 and summary["fit_ids"] is None
    assert set(pd.read_parquet(out3 / "steering.parquet").fit) == {"given"}


@pytest.mark.real_model
def test_real_model_steering_moves_labels(real_model):
    from emolens.data.stimuli import load_stimuli

    singles = load_stimuli("singles")
    r = singles.appraisal("pleasantness")
    ds = singles.subset(np.concatenate([np.flatnonzero(r >= 4)[:2], np.flatnonzero(r <= 2)[:2]]))
    res = sweep(real_model, ds, ["pleasantness-"], windows=[6], span=3, betas=[0.5], scale="relative",
                   n_random=1, control=None, batch_size=4, holdout=None)
    frame = res.frame
    assert res.info["fit"] == "all" and res.info["fast_path"] == ["last"]
    assert (frame[(frame.beta == 0) & (frame.metric == "flip_rate")].value == 0).all()
    real = frame[(frame.kind == "real") & (frame.beta == 0.5) & (frame.metric == "delta_logp")]
    assert real.value.abs().max() > 0.01 and real.n.eq(4).all()


# ------------------------------------------------------------------------------ controls, split, fluency


def test_default_controls_let_the_permutation_p_value_reach_005(tiny_llama, stim):
    X = torch.randn(len(stim), 3, tiny_llama.sites.d_model, generator=torch.Generator().manual_seed(0))
    bank = compute_bank(X, [0, 1, 2], stim)
    conds = build_conditions(tiny_llama, bank, ["pleasantness+"], [1], 3, [1.0], ["last"])
    randoms = [c.direction for c in conds if c.kind == "random"]
    assert N_RANDOM >= 19 and randoms == [f"random:{s}" for s in range(N_RANDOM)]
    # a steering table whose real direction matches the reference exactly and whose 19 random
    # directions do not: p = (1 + 0) / (1 + 19) = 0.05, computed from the random rows of the table
    g = np.random.default_rng(1)
    ref = pd.DataFrame(g.normal(size=(1, 13)), index=["pleasantness"], columns=list(EMOTIONS))
    rows = [("pleasantness+", "real", ref.loc["pleasantness"].to_numpy())]
    rows += [(f"random:{s}", "random", g.normal(size=13)) for s in range(19)]
    frame = pd.DataFrame([dict(direction=d, kind=k, method="diffmean", partial=False, scale="unit", fit="heldout",
                               window=1, layers="0-2", beta=1.0, position="last", metric="delta_logp", label=e,
                               value=float(v[j])) for d, k, v in rows for j, e in enumerate(EMOTIONS)])
    align, _ = theory.sweep_alignment(frame, ref, {"pleasantness+": [("pleasantness", 1.0)]})
    head = align[align.metric == "alignment"].iloc[0]
    assert head.value == pytest.approx(1.0) and head.n_random == 19 and head.fit == "heldout"
    assert head.p_value == pytest.approx(0.05)
    assert "best_alignment" not in set(align.metric)  # one setting: nothing was picked
    # a second window where the real direction is noise but random:3 happens to match the reference:
    # the per-window p stays 0.05 at window 1, the best-window p counts random:3's best too
    other = frame.assign(window=2, layers="1-3")
    other.loc[other.kind == "real", "value"] = np.tile(g.normal(size=13), 1)
    other.loc[other.direction == "random:3", "value"] = ref.loc["pleasantness"].to_numpy()
    align, _ = theory.sweep_alignment(pd.concat([frame, other]), ref, {"pleasantness+": [("pleasantness", 1.0)]})
    per = align[align.metric == "alignment"].set_index("window")
    assert per.loc[1, "p_value"] == pytest.approx(0.05) and per.loc[2, "value"] < 0.9
    best = align[align.metric == "best_alignment"].iloc[0]
    assert best.window == 1 and best.value == pytest.approx(1.0) and best.n_settings == 2
    assert best.p_value == pytest.approx(0.1) and best.n_random == 19
    frame.loc[frame.direction == "random:3", "value"] = ref.loc["pleasantness"].to_numpy()  # one random ties
    align, _ = theory.sweep_alignment(frame, ref, {"pleasantness+": [("pleasantness", 1.0)]})
    assert align[align.metric == "alignment"].p_value.item() == pytest.approx(0.1)


def test_directions_are_fitted_on_the_train_split_and_measured_on_held_out_items(tiny_llama):
    from emolens.data.stimuli import load_stimuli

    ds = load_stimuli("singles").sample(26, seed=0)
    kw = dict(windows=[1], span=3, betas=[2.0], n_random=2, control=None, batch_size=8)
    res = sweep(tiny_llama, ds, ["pleasantness+"], **kw)
    fit_ids, steered_ids = set(res.info["fit_ids"]), set(res.info["steered_ids"])
    assert res.info["fit"] == "heldout" and not fit_ids & steered_ids and fit_ids | steered_ids == set(ds.ids)
    assert set(res.frame.fit) == {"heldout"} and (res.frame.n == len(steered_ids)).all()
    assert list(res.dataset.ids) == res.info["steered_ids"]
    labels = dict(zip(ds.ids, ds.labels, strict=True))
    for lab in set(ds.labels):  # label-stratified: every label's items split about half and half
        n_in = sum(labels[i] == lab for i in steered_ids)
        n_all = sum(x == lab for x in ds.labels)
        assert abs(n_in - n_all / 2) <= 0.5 + 1e-9
    # the directions are the train split's own diff-of-means, not the whole set's
    train = ds.subset(sorted(fit_ids, key=list(ds.ids).index))
    X = capture_resid(tiny_llama, build_prompts(train.texts, None, tiny_llama.tokenizer), [0, 1, 2], 8)
    assert torch.allclose(res.bank.get("pleasantness"), compute_bank(X, [0, 1, 2], train).get("pleasantness"),
                          atol=1e-5)
    again = sweep(tiny_llama, ds, ["pleasantness+"], **kw)  # seeded: the same split
    assert again.info["steered_ids"] == res.info["steered_ids"]
    paper = sweep(tiny_llama, ds, ["pleasantness+"], holdout=None, **kw)
    assert paper.info["fit"] == "all" and set(paper.frame.fit) == {"all"} and (paper.frame.n == len(ds)).all()
    assert fit_relation(ds.subset([0, 1, 2]), ds.subset([2, 3])) == "overlap"
    assert fit_relation(None, ds) == "given"


@pytest.mark.parametrize("text, flags", [
    ("I was so relieved when the doctor called and said the results were fine, so we went out.", []),
    ("the the the the the the the the the the the the", ["distinct2", "repeat"]),
    ("I was happy. I was happy. I was happy. I was happy. I was happy.", ["distinct2", "repeat"]),
    ("!!! ### ??? ;;; ))) 123 *** ... :: ==", ["nonalpha"]),
    ("", ["empty"]),
    (".import requests\nimport json\n\ndef fetch_data(url):\n    response = requests.get(url)\n"
     "    if response.status_code", ["code"]),
    ("public class DrivingTest {\n    public static void main(String[] args) {", ["code"]),
    ("I told her: we should talk.\nShe said no; I left.\nThen I cried (a lot).", []),
    # a markdown heading over prose is prose (a chat model's reply); a commented script is still code
    ("# The day I passed my driving test\nI was so nervous that I could barely hold the wheel.", []),
    ("# read the results\nscores = load(path)\nprint(scores)", ["code"]),
])
def test_fluency_flags_on_crafted_texts(text, flags):
    got = fluency_flags(text, -2.0)
    assert got == flags
    assert degenerate(text, -2.0) == bool(flags)


def test_fluency_flags_are_judged_against_the_clean_continuation():
    fluent = "I called my sister and we talked about it for a long time before dinner."
    assert fluency_flags(fluent, -2.0, (fluent, -1.8)) == []
    # fine-looking text the clean model finds far less likely than its own continuation
    assert fluency_flags(fluent, -4.9, ("We went home after the party and slept.", -1.5)) == ["logp_vs_clean"]
    assert fluency_flags(fluent, -7.0) == ["logp"]
    # code-like text: fine after a code-like clean continuation, flagged after a prose one
    code = "x = 1; y = 2; return x"
    assert text_stats(code)["nonalpha"] == pytest.approx(0.5)
    assert fluency_flags(code, -2.0, ("a = 3; b = 4; print b", -2.0)) == ["code"]  # code is never fluent prose
    assert fluency_flags(code, -2.0, (fluent, -2.0)) == ["code", "nonalpha_vs_clean"]
    loop = "and then and then and then we"  # too short for the absolute loop checks (8+ words)
    assert fluency_flags(loop, -2.0) == []
    assert fluency_flags(loop, -2.0, (fluent, -2.0)) == ["distinct2_vs_clean", "repeat_vs_clean"]
    assert fluency_flags("!! ## ;; ok", -2.0) == ["nonalpha"]  # absolute flags hold whatever the clean did
    s = text_stats("a b c a b c a b")
    assert s["words"] == 8 and s["repeat"] == pytest.approx(5 / 8) and s["distinct2"] == pytest.approx(3 / 7)


def test_label_bars_draw_the_direction_its_control_and_summaries(tmp_path, monkeypatch):
    """A direction's label-bar figure has one panel each for the direction, its residualised refit and
    its specificity control, and ONE summary panel for the random directions and one for its own
    within-emotion refits (mean share, 2.5-97.5% band), not a panel per control."""
    from emolens.report import steering_figures as sf

    rng = np.random.default_rng(0)
    labels, rows = ["joy", "anger", "fear"], []
    names = {"pleasantness+": "real", "pleasantness+|residualised": "residualised",
             "control:familiarity+": "specificity", "control:suddenness+": "specificity",
             **{f"random:{s}": "random" for s in range(7)},
             **{f"pleasantness+{theory.EMOTION_NULL_SEP}{j}": "emotion_null" for j in range(4)},
             **{f"familiarity+{theory.EMOTION_NULL_SEP}{j}": "emotion_null" for j in range(3)}}
    for name, kind in names.items():
        for beta in (0.0, 4.0):
            share = rng.dirichlet(np.ones(len(labels)))
            rows += [dict(metric="fraction", window=5, position="last", layers="4,5,6", direction=name, kind=kind,
                          beta=beta, label=lab, value=v) for lab, v in zip(labels, share, strict=True)]
    frame = pd.DataFrame(rows)
    panels = sf.label_bar_panels(frame, "pleasantness+")
    assert list(panels) == ["pleasantness+", "pleasantness+|residualised", "control:familiarity+",
                            "random (mean of 7)", "within-emotion refits (mean of 4)"]
    # familiarity's own control is the next candidate the sweep would pick
    assert "control:suddenness+" in sf.label_bar_panels(frame, "familiarity+")
    drawn = {}
    monkeypatch.setattr(sf, "save_figure", lambda fig, path: drawn.setdefault("fig", fig) and path)
    sf.plot_label_bars(frame, "pleasantness+", tmp_path / "x.png")
    axes = drawn["fig"].axes
    assert [ax.get_title() for ax in axes] == list(panels)
    rnd = frame[frame.kind == "random"]
    for ax, expected in ((axes[0], frame[frame.direction == "pleasantness+"]), (axes[3], rnd)):
        heights = [p.get_height() for p in ax.patches]  # label-major: label 0 at every beta, then label 1 ...
        want = expected.groupby(["label", "beta"], sort=False)["value"].mean().reindex(
            pd.MultiIndex.from_product([labels, [0.0, 4.0]]))
        np.testing.assert_allclose(heights, want.to_numpy())
    assert not axes[0].lines and axes[3].lines  # the band is drawn on summaries only


@pytest.mark.parametrize("position", ["generated", "last"])
def test_stacked_generations_equal_one_generate_per_setting(tiny_llama, position):
    """The clean text and every condition in one batched generate (each row its own vector) give the
    continuations one generate per setting gives."""
    from emolens.steering.generation import generate_stacked

    texts = ["my dog died", "I won the prize after a very long year", "a thief came"]
    layers = [1, 2]
    gen = torch.Generator().manual_seed(0)
    vectors = [None, *(4 * torch.randn(len(layers), tiny_llama.sites.d_model, generator=gen) for _ in range(3))]
    stacked = generate_stacked(tiny_llama, texts, layers, vectors, position, max_new_tokens=6)
    single = [generate_steered(tiny_llama, texts, None if v is None else layers, v, position, 6) for v in vectors]
    assert stacked == single
    assert len({tuple(x) for x in stacked}) > 1  # the vectors steer: not every setting says the same


def test_generation_records_read_each_continuation_as_a_readout_of_it_alone(tiny_llama, stim):
    """Sample generations read every setting's texts in one pass and score every continuation's fluency
    on one run of its item's text; each record equals that text read on its own and that
    continuation scored on its own."""
    from emolens.inputs.prompts import PromptSpec
    from emolens.readout import readout
    from emolens.steering.generation import continuation_logprob, steered_generations
    from emolens.steering.sweep import Condition

    data = stim.subset(stim.ids[:3], name="three")
    gen = torch.Generator().manual_seed(1)
    conds = [Condition(f"d{k}", "real", 1, (1, 2), 1.0, "generated",
                       4 * torch.randn(2, tiny_llama.sites.d_model, generator=gen)) for k in range(3)]
    records = steered_generations(tiny_llama, data, conds, n_items=3, max_new_tokens=6)
    assert len(records) == 3 * 4 and [r["direction"] for r in records[::3]] == ["clean", "d0", "d1", "d2"]
    assert len({r["continuation"] for r in records}) > 3  # settings differ, so a mixed-up row would show
    spec = PromptSpec()
    for r in records:
        full = f"{r['text']} {r['continuation'].strip()}".strip()
        one = type(data)(ids=["x"], texts=[full], labels=[None], appraisals=np.zeros((1, 21)), name="one")
        alone = readout(tiny_llama, one, spec, batch_size=1, progress=False).frame
        assert r["emotion"] == alone["pred"].iloc[0]
        probs = np.exp(alone[[f"logp_{lab}" for lab in spec.labels]].to_numpy()[0])
        np.testing.assert_allclose([r["probs"][lab] for lab in spec.labels], probs / probs.sum(), atol=2e-4)
        lp = continuation_logprob(tiny_llama, [r["text"]], [r["continuation"]])[0]
        assert (r["mean_logp"] is None and not np.isfinite(lp)) or r["mean_logp"] == pytest.approx(lp, abs=2e-4)


def test_a_stores_residuals_stand_in_for_the_sweeps_own_capture(tiny_llama, tmp_path):
    """With ``acts`` reading the residuals at the cue from a store extracted with the same prompts,
    the sweep (covariance-matched random directions, within-emotion refits, residualised refits,
    relative scale) gives the table it gives capturing them itself, and runs fewer token-layers."""
    from emolens.activations.extract import extract
    from emolens.data.stimuli import load_stimuli
    from emolens.engine.accounting import WorkCounter
    from emolens.inputs.prompts import PromptSpec
    from emolens.steering.directions import store_acts

    ds = load_stimuli("singles").sample(26, seed=0)
    extract(tiny_llama, ds, tmp_path / "store", sites="resid", layers="all", positions="-1", batch_size=8,
            progress=False, dtype="float32")
    assert store_acts(tmp_path / "store", PromptSpec(template="T2")) is None  # another prompt's vectors
    assert store_acts(tmp_path / "nothing", PromptSpec()) is None
    read = store_acts(tmp_path / "store", PromptSpec())
    calls: list[int] = []

    def acts(items, layers):
        calls.append(len(items))
        return read(items, layers)

    kw = dict(windows=[1], span=3, betas=[0.5], scale="relative", n_random=3, n_emotion_null=2, residualised=True,
              control=None, batch_size=8)
    with WorkCounter.attach(tiny_llama).span() as own_work:
        own = sweep(tiny_llama, ds, ["pleasantness+"], **kw)
    with WorkCounter.attach(tiny_llama).span() as store_work:
        stored = sweep(tiny_llama, ds, ["pleasantness+"], acts=acts, **kw)
    assert calls == [13, 13]  # the fit half for the nulls, the steered half for the reference norms
    assert store_work.token_layers < own_work.token_layers
    pd.testing.assert_frame_equal(own.frame.drop(columns=["value", "ci_low", "ci_high"]),
                                  stored.frame.drop(columns=["value", "ci_low", "ci_high"]))
    np.testing.assert_allclose(stored.frame.value.to_numpy(), own.frame.value.to_numpy(), atol=2e-5, rtol=1e-4)
    assert stored.frame.kind.isin(["random", "emotion_null", "residualised", "residualised_null"]).any()
    missing = sweep(tiny_llama, ds, ["pleasantness+"], acts=lambda items, layers: None, **kw)  # not in a store
    np.testing.assert_allclose(missing.frame.value.to_numpy(), own.frame.value.to_numpy(), atol=1e-6)

    # a steering run says when a store it was given did not serve (its capture is work the store should spare)
    from emolens.steering.run import SteerPlan, run_steering

    plan = SteerPlan(directions=["pleasantness+"], windows=[1], span=3, betas=[0.5], n_random=3, control=None,
                     batch_size=8)
    served = run_steering(tiny_llama, ds, plan, acts=read)
    lacking = run_steering(tiny_llama, ds, plan, acts=lambda items, layers: None)
    mine = run_steering(tiny_llama, ds, plan)  # no store: capturing is the plan, not news
    assert not any("captured again" in n for n in served.notes + mine.notes)
    assert any("captured again for 13 items" in n for n in lacking.notes)


def test_directions_the_fit_items_cannot_define_are_skipped_when_asked(tiny_llama):
    """A study steers a fixed list of emotions; on a small fit split an emotion without items has no
    direction. With skip_undefined it is left out and named, without it the sweep refuses; a list
    with no definable direction is refused either way."""
    from emolens.data.stimuli import load_stimuli
    from emolens.labels import EMOTIONS

    ds = load_stimuli("singles").sample(14, seed=0)
    fit, _ = fit_split(ds, 0.5, 0)
    absent = next(e for e in EMOTIONS if e not in set(fit.labels))  # no fit item of this emotion
    kw = dict(windows=[1], span=3, betas=[2.0], n_random=2, control=None, batch_size=8)
    res = sweep(tiny_llama, ds, ["pleasantness+", f"{absent}+"], skip_undefined=True, **kw)
    assert res.info["skipped_directions"] == [f"{absent}+"]
    assert set(res.frame[res.frame.kind == "real"].direction) == {"pleasantness+"}
    with pytest.raises(EmolensError, match="undefined"):
        sweep(tiny_llama, ds, ["pleasantness+", f"{absent}+"], **kw)
    with pytest.raises(EmolensError, match="no steering direction"):
        sweep(tiny_llama, ds, [f"{absent}+"], skip_undefined=True, **kw)

    # a run says so in one note, whether its sweep fitted the directions or they were given
    from emolens.steering.run import SteerPlan, run_steering

    plan = SteerPlan(directions=["pleasantness+", f"{absent}+"], windows=[1], span=3, betas=[2.0], n_random=2,
                     control=None, batch_size=8, skip_undefined=True)
    fitted = run_steering(tiny_llama, ds, plan)
    given = run_steering(tiny_llama, ds, plan, bank_for=lambda method, fit, layers: fitted.swept[method].bank)
    note = f"no diffmean direction for ['{absent}+'] (their concepts lack items on both sides in the fit items)"
    assert note in fitted.notes and note in given.notes


def test_the_surgery_panel_shows_real_directions_and_one_row_per_control():
    """The report's appraisal-surgery heatmap: one row per real direction (emotion promotion left
    out), the random directions averaged into one row, the clean run; never a row per null direction."""
    from emolens.report.steering_figures import surgery_table

    rows = []
    for window in (3, 5, 7):
        for label, value in (("joy", 0.6), ("anger", 0.4)):
            rows.append(dict(metric="fraction", beta=0.0, window=window, direction="pleasantness+", kind="real",
                             label=label, value=0.5))
            rows.append(dict(metric="fraction", beta=2.0, window=window, direction="pleasantness+", kind="real",
                             label=label, value=value))
            rows.append(dict(metric="fraction", beta=2.0, window=window, direction="joy+", kind="real",
                             label=label, value=1.0))
            rows += [dict(metric="fraction", beta=2.0, window=window, direction=f"random:{j}", kind="random",
                          label=label, value=j / 10) for j in range(5)]
            rows += [dict(metric="fraction", beta=2.0, window=window, direction=f"pleasantness+~null{j}",
                          kind="emotion_null", label=label, value=0.3) for j in range(3)]
    mid, piv = surgery_table(pd.DataFrame(rows), ["joy+"])
    assert mid == 5
    assert list(piv.index) == ["pleasantness+", "(random directions, mean)", "(clean)"]
    assert piv.loc["(random directions, mean)", "joy"] == pytest.approx(0.2)
    assert piv.loc["pleasantness+", "anger"] == pytest.approx(0.4) and piv.loc["(clean)", "joy"] == 0.5


def test_selected_design_chooses_on_some_items_and_tests_with_every_null_on_the_others(tiny_llama):
    """The selected null design (``steering.selection``): the descriptive sweep has every setting but
    no refits; the setting is the one whose alignment is highest on the selection items -- the same
    scores as steering those items alone; the nulls run only there, on the disjoint test items, and
    the headline p is that setting's own; the run does less model work than nulls at every setting."""
    from emolens.data.stimuli import load_stimuli
    from emolens.engine.accounting import WorkCounter
    from emolens.steering import selection
    from emolens.steering.run import SteerPlan, run_steering

    ds = load_stimuli("all").sample(120, seed=0)
    kw = dict(directions=["pleasantness+", "pleasantness-", "other_responsblt+"], methods=["diffmean"],
              windows=[0, 1, 2], span=1, betas=[1.0, 2.0], scale="relative", n_random=12, n_emotion_null=4,
              residualised=True, batch_size=16)
    with WorkCounter.attach(tiny_llama).span() as chosen_work:
        run = run_steering(tiny_llama, ds, SteerPlan(**kw, null_design="selected"))
    with WorkCounter.attach(tiny_llama).span() as every_work:
        every = run_steering(tiny_llama, ds, SteerPlan(**kw))
    assert chosen_work.token_layers < every_work.token_layers
    s, res = run.summary, run.swept["diffmean"]
    chosen_on, tested_on = selection.split(res.dataset, 0.5, 0)
    assert (s["null_design"], s["n_selection"], s["n_test"]) == ("selected", len(chosen_on), len(tested_on))
    assert not set(chosen_on.ids) & set(tested_on.ids)
    assert set(chosen_on.ids) | set(tested_on.ids) == set(res.dataset.ids)

    table = run.table[run.table.beta != 0]
    assert set(table.kind) == {"real", "specificity", "random", "residualised"}  # no refit at every setting
    assert table[table.kind == "random"].direction.nunique() == selection.SWEEP_RANDOM
    assert len(table[["window", "beta"]].drop_duplicates()) == 6

    reference = theory.rating_profile(ds, ds.appraisal_names)
    fit, _ = fit_split(ds, 0.5, 0)
    alone = sweep(tiny_llama, chosen_on, kw["directions"], bank=res.bank, fit_dataset=fit, windows=[0, 1, 2], span=1,
                  betas=[1.0, 2.0], scale="relative", n_random=0, control=None, ref_norm=res.ref_norm, batch_size=16)
    own, _ = theory.sweep_alignment(alone.frame, reference, run.terms)
    own = own[own.metric == "alignment"].set_index(["window", "beta"]).value
    align = run.alignment[run.alignment.reference == "ratings"]
    scored = align[(align.part == "selection") & (align.metric == "alignment")].set_index(["window", "beta"]).value
    np.testing.assert_allclose(scored.sort_index().to_numpy(), own.sort_index().to_numpy(), atol=1e-9)
    at = s["selected_setting"]
    assert (at["window"], at["beta"]) == own.idxmax()

    test = run.test_table[run.test_table.beta != 0]
    raw = test[~test.kind.isin(["residualised", "residualised_null"])]
    assert set(zip(raw.window, raw.beta, strict=True)) == {(at["window"], at["beta"])}
    assert set(test.n) == {len(tested_on)}
    assert raw[raw.kind == "random"].direction.nunique() == 12
    assert raw[raw.kind == "emotion_null"].direction.nunique() == 4 * 3
    best = align[align.metric == "best_alignment"].iloc[0]
    plain = align[(align.part == "test") & (align.metric == "alignment")].iloc[0]
    mine, _ = theory.sweep_alignment(raw, reference, run.terms)
    mine = mine[mine.metric == "alignment"].iloc[0]
    assert (best.design, best.n_settings, best.window, best.beta) == ("selected", 6, at["window"], at["beta"])
    assert best.value == plain.value == pytest.approx(mine.value) and best.p_value == plain.p_value == mine.p_value
    assert "chosen on" in s["alignment_headline"] and f"{len(tested_on)} other test items" in s["alignment_headline"]
    resid_at = s["selected_setting_residualised"]
    resid = run.alignment[(run.alignment.reference == "residualised") & (run.alignment.part == "test")]
    assert set(zip(resid.window, resid.beta, strict=True)) == {(resid_at["window"], resid_at["beta"])}

    # the descriptive sweep is the every-setting design's, minus the nulls
    mean = every.alignment[(every.alignment.metric == "alignment") & (every.alignment.reference == "ratings")]
    swept = align[(align.part == "sweep") & (align.metric == "alignment")]
    np.testing.assert_allclose(swept.set_index(["window", "beta"]).value.sort_index().to_numpy(),
                               mean.set_index(["window", "beta"]).value.sort_index().to_numpy(), atol=1e-6)
    assert swept.p_value.isna().all()


def test_a_probe_bank_fits_its_emotion_probes_under_the_given_iteration_cap():
    """A study's steering directions are its probes: the probe section's ``max_iter`` reaches the emotion
    logistic (a fit split smaller than the width separates, and would run the whole budget)."""
    from emolens.data.stimuli import load_stimuli
    from emolens.probes.directions import fit_directions
    from emolens.steering.directions import _ratings_and_labels

    ds = load_stimuli("all").sample(40, seed=0)
    X = torch.randn(40, 2, 48, generator=torch.Generator().manual_seed(0))
    capped = compute_bank(X, [3, 4], ds, "probe", max_iter=5)
    R, y = _ratings_and_labels(ds, list(ds.appraisal_names), EMOTIONS)
    direct = fit_directions(X.permute(1, 0, 2).contiguous(), y, R, methods=("probe",), max_iter=5)
    emotions = [capped.names.index(e) for e in EMOTIONS if e in capped.names]
    torch.testing.assert_close(capped.vectors[:, emotions], direct["emotion/probe"].float()[:, :len(emotions)])
    full = compute_bank(X, [3, 4], ds, "probe")
    assert not torch.allclose(full.vectors[:, emotions], capped.vectors[:, emotions])


def test_cli_selected_design_writes_the_test_table_and_says_where_the_nulls_ran(tmp_path, capsys):
    """``emolens steer --null-design selected``: the test items' table beside the sweep's, alignment rows
    marked by part, the summary's split, and a CLI line that counts the test's conditions too."""
    from emolens.cli.app import main
    from emolens.steering import selection

    out = tmp_path / "run"
    main(["steer", "--model", "tiny:llama", "--data", "stimuli", "--limit", "40", "--direction",
          "pleasantness+;pleasantness-", "--windows", "1", "--span", "3", "--beta", "2,8", "--scale", "relative",
          "--n-random", "11", "--n-emotion-null", "3", "--null-design", "selected", "--out", str(out)])
    line = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["null_design"] == "selected" and summary["n_selection"] + summary["n_test"] == summary["n_items"]
    tested = pd.read_parquet(out / "steering_test.parquet")
    assert set(tested.n) == {summary["n_test"]} and tested[tested.kind == "random"].direction.nunique() == 11
    at = summary["selected_setting"]
    raw = tested[(tested.beta != 0) & ~tested.kind.isin(["residualised", "residualised_null"])]
    assert set(raw.beta) == {at["beta"]}  # the residualised directions are tested at the setting they chose
    swept = pd.read_parquet(out / "steering.parquet")
    assert "emotion_null" not in set(swept.kind)
    assert swept[swept.kind == "random"].direction.nunique() == selection.SWEEP_RANDOM
    align = pd.read_parquet(out / "alignment.parquet")
    assert {"sweep", "selection", "test"} <= set(align.part)
    n_test = tested[tested.beta != 0].drop_duplicates(["direction", "window", "beta", "position"]).shape[0]
    assert f"then {n_test} at the chosen setting on {summary['n_test']} test items" in line
