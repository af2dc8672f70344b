"""The intervention engine against stock outputs: identities per family, padding, spans, generate."""

from __future__ import annotations

import functools

import pytest
import torch

from emolens.engine.intervention import Intervention, run_forward
from emolens.engine.ops import Add, Apply, Capture, Mean, Resample, Scale, Set, Zero, broadcast_value
from emolens.engine.positions import Positions, position_items
from emolens.errors import EmolensError
from emolens.inputs.batching import position_ids_from_mask
from emolens.model.loading import load_model
from emolens.model.tiny import TINY_FAMILIES

TEXTS = ["I saw mouldy food. Answer:", "My first child was born and we were all so happy. Answer:",
         "My dog died. Answer:"]


@functools.cache
def tiny(family: str):
    return load_model(f"tiny:{family}")


def encode(lm, texts=TEXTS, side="left"):
    tok = lm.tokenizer
    tok.padding_side = side
    try:
        enc = tok(list(texts), return_tensors="pt", padding=True)
    finally:
        tok.padding_side = "left"
    enc["position_ids"] = position_ids_from_mask(enc["attention_mask"])
    return dict(enc)


def hook_counts(lm) -> list[tuple[int, int]]:
    """Hooks per module (transformers installs its own output recorders, so compare, not count zero)."""
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in lm.model.modules()]


@torch.no_grad()
def logits(lm, enc, **kw):
    return lm.model(**enc, **kw).logits


@pytest.mark.parametrize("family", TINY_FAMILIES)
@torch.no_grad()
def test_identities_per_family(family):
    lm = tiny(family)
    reg = lm.sites
    enc = encode(lm)
    clean = lm.model(**enc, output_hidden_states=True)
    hs = clean.hidden_states
    sites = ["resid", "attn", "mlp", "attn_post", "mlp_post", "embed"]
    ops = [Capture(s, layers="all", positions="-4:") for s in sites]
    manual: dict[tuple[str, int], torch.Tensor] = {}
    handles = []
    for layer in range(reg.n_layers):
        for s, mod in (("attn", reg._modules["attn"][layer]), ("mlp", reg._modules["mlp"][layer])):
            handles.append(mod.register_forward_hook(
                lambda m, a, o, key=(s, layer): manual.__setitem__(key, (o if torch.is_tensor(o) else o[0]).clone())))
    try:
        with Intervention(lm, ops) as run:
            hooked = lm.model(**enc).logits
    finally:
        for h in handles:
            h.remove()
    # capture-only ops leave logits bit-identical
    assert torch.equal(hooked, clean.logits)
    cap = run.captures
    idx = Positions.of([-4, -3, -2, -1]).index(enc["attention_mask"])
    rows = torch.arange(len(TEXTS))[:, None]
    n = reg.n_layers
    assert cap["resid"].shape == (3, n, 4, reg.d_model)
    assert cap["embed"].shape == (3, 1, 4, reg.d_model)
    torch.testing.assert_close(cap["embed"][:, 0], hs[0][rows, idx], rtol=0, atol=0)
    for layer in range(n - 1):  # the last hidden state HF returns is after the final norm
        assert torch.equal(cap["resid"][:, layer], hs[layer + 1][rows, idx])
    for layer in range(n):
        assert torch.equal(cap["attn"][:, layer], manual[("attn", layer)][rows, idx])
        assert torch.equal(cap["mlp"][:, layer], manual[("mlp", layer)][rows, idx])
    # sum rule on the captured slices
    prev = cap["embed"][:, 0]
    for layer in range(n):
        torch.testing.assert_close(cap["resid"][:, layer],
                                   prev + cap["attn_post"][:, layer] + cap["mlp_post"][:, layer],
                                   rtol=1e-4, atol=1e-5)
        prev = cap["resid"][:, layer]
    if family in ("gemma2", "gemma3_text", "olmo2"):
        assert reg.post_norm and not torch.allclose(cap["attn"], cap["attn_post"])
    else:
        assert torch.equal(cap["attn"], cap["attn_post"]) and torch.equal(cap["mlp"], cap["mlp_post"])


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2", "gpt_neox", "phi3"])
def test_noop_restore_and_self_set(family):
    lm = tiny(family)
    enc = encode(lm)
    before = hook_counts(lm)
    clean = logits(lm, enc)
    d = lm.sites.d_model
    noops = [Scale("resid", layers="all", positions="all", factor=1.0),
             Add("mlp", layers=[1], positions=[-1, -2], value=torch.zeros(d)),
             Scale("heads", layers=0, positions=-1, heads=[1, 2], factor=1.0)]
    with Intervention(lm, noops):
        assert torch.equal(logits(lm, enc), clean)
    with Intervention(lm, [Add("resid", layers=[0, 1], positions=-1, value=torch.ones(d) * 3)]):
        assert not torch.allclose(logits(lm, enc), clean)
    assert torch.equal(logits(lm, enc), clean)  # leaving the context restores the model exactly
    assert hook_counts(lm) == before
    with Intervention(lm, [Capture(s, layers="all", positions=[-1, -3]) for s in ("resid", "attn", "heads")]) as run:
        logits(lm, enc)
    cap = run.captures
    selfset = [Set(s, layers="all", positions=[-1, -3], value=cap[s], dims="blp") for s in ("attn", "heads")]
    selfset.append(Set("resid", layers="all", positions=[-1, -3], value=cap["resid"]))
    with Intervention(lm, selfset):
        assert torch.equal(logits(lm, enc), clean)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2", "qwen3"])
@torch.no_grad()
def test_left_padded_batch_equals_one_at_a_time(family):
    lm = tiny(family)
    ops = [Capture("resid", layers="all", positions=[-1, -2, -3]), Capture("attn", layers=[0, 2], positions=0)]
    enc = encode(lm)
    out, run = run_forward(lm, enc, ops)
    for i, text in enumerate(TEXTS):
        single, srun = run_forward(lm, encode(lm, [text]), ops)
        torch.testing.assert_close(out.logits[i, -1], single.logits[0, -1], rtol=0, atol=1e-4)
        for key in ("resid", "attn"):
            torch.testing.assert_close(run.captures[key][i], srun.captures[key][0], rtol=0, atol=1e-4)
    # right padding resolves the same relative positions through the mask
    right = encode(lm, side="right")
    _, rrun = run_forward(lm, right, ops)
    torch.testing.assert_close(rrun.captures["resid"], run.captures["resid"], rtol=0, atol=1e-4)


def test_span_mean_pool_and_mask_positions(tiny_llama):
    lm = tiny_llama
    enc = encode(lm)
    mask = enc["attention_mask"].bool()
    span = torch.zeros_like(mask)
    span[:, -5:-2] = True
    span[0, -6] = True
    batch = {**enc, "span_masks": {"context": span}}
    ops = [Capture("resid", layers=[1], positions="context", pool="mean", name="ctx"),
           Capture("resid", layers=[1], positions="all", pool="mean", name="all"),
           Capture("resid", layers=[1], positions=[-1, -2], pool="mean", name="last2"),
           Capture("resid", layers=[1], positions="all", pool=None, name="bad")]
    with pytest.raises(EmolensError, match="pool"):
        run_forward(lm, batch, ops)
    _, run = run_forward(lm, batch, ops[:3])
    out = lm.model(**enc, output_hidden_states=True).hidden_states[2]
    for name, m in (("ctx", span), ("all", mask)):
        manual = torch.stack([out[b][m[b]].mean(0) for b in range(len(TEXTS))])
        torch.testing.assert_close(run.captures[name][:, 0, 0], manual, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(run.captures["last2"][:, 0, 0], out[:, -2:].mean(1), rtol=1e-6, atol=1e-6)
    # edits over a span touch only that span
    clean = logits(lm, enc)
    with Intervention(lm, [Zero("resid", layers=[0], positions="context")], spans={"context": span}) as run:
        edited = logits(lm, enc)
    assert not torch.allclose(edited, clean)
    with pytest.raises(EmolensError, match="span"):
        Intervention(lm, [Zero("resid", positions="context")])


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt_neox"])
def test_early_stop_matches_full_forward(family):
    lm = tiny(family)
    enc = encode(lm)
    ops = [Capture("resid", layers=[0, 1], positions=[-1, -2]), Capture("heads", layers=1, positions=-1),
           Add("mlp", layers=0, positions=-1, value=torch.ones(lm.sites.d_model))]
    full, run_full = run_forward(lm, enc, ops, need_logits=True)
    fired = []
    h = lm.sites.layers[2].register_forward_hook(lambda m, a, o: fired.append(1))
    try:
        none, run_stop = run_forward(lm, enc, ops, need_logits=False)
    finally:
        h.remove()
    assert none is None and run_stop.stopped and not fired
    for key in ("resid", "heads"):
        assert torch.equal(run_full.captures[key], run_stop.captures[key])
    assert run_stop.captures["heads"].shape == (3, 1, 1, lm.sites.n_heads, lm.sites.head_dim)


def test_heads_ops_match_manual(tiny_llama):
    lm = tiny_llama
    enc = encode(lm)
    reg = lm.sites
    o_proj = reg.point("heads", 1).module
    seen = {}
    with Intervention(lm, [Zero("heads", layers=1, positions=-1, heads=[0, 2]),
                           Capture("heads", layers=1, positions=[-1, -2], heads=[0, 2, 3])]) as run:
        h = o_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].clone()))
        try:
            logits(lm, enc)
        finally:
            h.remove()
    x = seen["x"].unflatten(-1, (reg.n_heads, reg.head_dim))
    assert torch.equal(x[:, -1, [0, 2]], torch.zeros_like(x[:, -1, [0, 2]]))
    assert not torch.equal(x[:, -1, 1], torch.zeros_like(x[:, -1, 1]))
    cap = run.captures["heads"]
    assert cap.shape == (3, 1, 2, 3, reg.head_dim)
    assert torch.equal(cap[:, 0, 0], x[:, -1, [0, 2, 3]])  # captured after the zeroing op
    with pytest.raises(EmolensError, match="heads"):
        Intervention(lm, [Zero("resid", heads=[0])])


def test_value_shapes_and_ops(tiny_llama):
    lm = tiny_llama
    enc = encode(lm)
    d = lm.sites.d_model
    with Intervention(lm, [Capture("resid", layers=[0, 1], positions=[-1, -2])]) as run:
        logits(lm, enc)
    base = run.captures["resid"]  # [3, 2, 2, d]

    def after(op):
        with Intervention(lm, [op, Capture("resid", layers=[0, 1], positions=[-1, -2])]) as r:
            logits(lm, enc)
        return r.captures["resid"]

    per_layer = torch.stack([torch.full((d,), 1.0), torch.full((d,), 2.0)])  # [layers, d]
    got = after(Add("resid", layers=[0, 1], positions=[-1, -2], value=per_layer))
    torch.testing.assert_close(got[:, 0], base[:, 0] + 1)  # layer 0 then propagates into layer 1
    per_row = torch.arange(3.0)[:, None].expand(3, d)  # [B, d]
    got = after(Set("resid", layers=[1], positions=-1, value=per_row))
    assert torch.equal(got[:, 1, 0], per_row) and torch.equal(got[:, 1, 1], base[:, 1, 1])
    got = after(Scale("resid", layers=[1], positions=-2, factor=0.5))
    torch.testing.assert_close(got[:, 1, 1], base[:, 1, 1] * 0.5)
    got = after(Mean("resid", layers=[1], positions=[-1, -2], value=base[:, 1].mean((0, 1))))
    assert torch.equal(got[:, 1], base[:, 1].mean((0, 1)).expand(3, 2, d))
    got = after(Resample("resid", layers=[1], positions=[-1, -2], source=base[:, 1:], index=[2, 0, 1]))
    assert torch.equal(got[:, 1], base[[2, 0, 1], 1])
    got = after(Apply("resid", layers=[1], positions=-1, fn=lambda x: -x))
    assert torch.equal(got[:, 1, 0], -base[:, 1, 0])
    with pytest.raises(EmolensError, match="ambiguous"):
        broadcast_value(torch.zeros(2, d), n_layers=2, batch=2, width_ndim=1)
    assert broadcast_value(torch.zeros(2, d), 2, 2, 1, dims="l").shape == (1, 2, 1, d)
    with pytest.raises(EmolensError, match="fewer dims"):
        broadcast_value(torch.zeros(()), 1, 1, 1)


def test_position_errors_and_parsing(tiny_llama):
    lm = tiny_llama
    before = hook_counts(lm)
    assert position_items("-1,-2") == [-1, -2]
    assert position_items("-3:") == [-3, -2, -1]
    assert position_items("-1,context") == [-1, "context"]
    assert Positions.of("-3:") == Positions.of([-3, -2, -1]) == Positions(ints=(-3, -2, -1))
    for bad in ("x", "1:3", "", "-1,-1", [True]):
        with pytest.raises(EmolensError):
            Positions.of(bad)
    with pytest.raises(EmolensError, match="mix"):
        Positions.of("-1,context")
    with pytest.raises(EmolensError, match="outside"):
        run_forward(lm, encode(lm), [Capture("resid", positions=-40)])
    with pytest.raises(EmolensError, match="unknown site"):
        Intervention(lm, [Capture("nope")])
    with pytest.raises(EmolensError, match="out of range"):
        Intervention(lm, [Capture("resid", layers=[7])])
    with pytest.raises(EmolensError, match="distinct"):
        Intervention(lm, [Capture("resid"), Capture("resid", layers=0)])
    with pytest.raises(EmolensError, match="no value"):
        Intervention(lm, [Add("resid")])
    assert hook_counts(lm) == before


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@torch.no_grad()
def test_generate_prefill_and_every_token(family):
    lm = tiny(family)
    enc = encode(lm, TEXTS[:2])
    enc.pop("position_ids")
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    plain = lm.model.generate(**enc, **kw)
    d = lm.sites.d_model
    with Intervention(lm, [Capture("resid", layers="all", positions=-1)]) as run:
        same = lm.model.generate(**enc, **kw)
    assert torch.equal(plain, same)
    assert run.captures["resid"].shape == (2, 3, 1, d) and not run.generated
    vec = torch.randn(d, generator=torch.Generator().manual_seed(0)) * 50
    with Intervention(lm, [Add("resid", layers=[0, 1], positions=-1, value=vec, every_token=True),
                           Capture("resid", layers=[2], positions=-1, every_token=True)]) as run:
        steered = lm.model.generate(**enc, **kw)
    assert not torch.equal(steered, plain)
    assert run.generated["resid"].shape == (2, 1, 4, d)  # one capture per decode step
    with Intervention(lm, [Add("resid", layers=[0, 1], positions="generated", value=vec)]):
        gen_only = lm.model.generate(**enc, **kw)
    T = enc["input_ids"].shape[1]
    # the first new token comes from the prefill, which "generated" leaves alone
    assert torch.equal(gen_only[:, : T + 1], plain[:, : T + 1])
    calls: dict[str, list[tuple[int, ...]]] = {"prefill": [], "every": []}
    for key, every in (("prefill", False), ("every", True)):
        fn = functools.partial(lambda x, key: calls[key].append(tuple(x.shape)) or x, key=key)
        with Intervention(lm, [Apply("resid", layers=[1], positions=[-1, -2], fn=fn, every_token=every)]):
            lm.model.generate(**enc, **kw)
    assert calls["prefill"] == [(2, 2, d)]  # the prefill only, at the two requested positions
    assert calls["every"] == [(2, 2, d)] + [(2, 1, d)] * 4  # then each decode step's new token
    assert torch.equal(lm.model.generate(**enc, **kw), plain)


@pytest.mark.real_model
@torch.no_grad()
def test_real_model_resid_and_noop(real_model):
    lm = real_model
    enc = encode(lm, TEXTS[:2])
    clean = lm.model(**enc, output_hidden_states=True)
    layers = list(range(lm.sites.n_layers - 1))
    with Intervention(lm, [Capture("resid", layers=layers, positions=-1),
                           Scale("mlp", layers="all", positions="all", factor=1.0)]) as run:
        hooked = lm.model(**enc).logits
    assert torch.equal(hooked, clean.logits)
    for layer in layers:
        assert torch.equal(run.captures["resid"][:, layer, 0], clean.hidden_states[layer + 1][:, -1])


def test_positions_mask_and_index_agree_on_padded_rows():
    """One resolution for every position: ints relative to the real tokens, names as masks."""
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]])
    last = Positions.of(-1)
    assert last.index(mask).tolist() == [[5], [5], [5]] and last.suffix == 1 and last.label == "-1"
    assert Positions.of(0).index(mask).tolist() == [[2], [0], [4]] and Positions.of(0).suffix == 0
    two = Positions.of("-2:")
    assert two.suffix == 2 and two.label == "-2|-1"
    assert torch.equal(two.mask(mask), torch.zeros_like(mask, dtype=torch.bool).scatter_(1, two.index(mask), True))
    prompt = Positions.of("prompt").mask(mask)  # every real token but the first (the sink)
    assert prompt.tolist() == [[False, False, False, True, True, True], [False] + [True] * 5,
                               [False] * 5 + [True]]
    assert torch.equal(Positions.of("all").mask(mask), mask.bool())
    assert not Positions.of("none").mask(mask).any() and not Positions.of("generated").mask(mask).any()
    spans = {"context": torch.tensor([[0, 0, 1, 1, 0, 0]] * 3).bool()}
    assert Positions.of("context").mask(mask, spans).tolist()[2] == [False] * 6  # padding is never a position
    explicit = Positions.of(torch.ones(3, 6, dtype=torch.bool))
    assert torch.equal(explicit.mask(mask), mask.bool())
    with pytest.raises(EmolensError, match="outside row 2"):
        Positions.of(-3).index(mask)
    with pytest.raises(EmolensError, match="no token mask"):
        Positions.of("shots").mask(mask, spans)
    with pytest.raises(EmolensError, match="no real token"):
        last.index(torch.zeros(1, 3))


def test_run_forward_without_ops_or_logits_is_refused_not_silently_empty(tiny_llama):
    """No ops and no logits would stop before layer 0 (no forward at all): refused with the fix."""
    enc = encode(tiny_llama)
    with pytest.raises(EmolensError, match="nothing to compute.*need_logits=True"):
        run_forward(tiny_llama, enc, [], need_logits=False)
    out, run = run_forward(tiny_llama, enc, [])  # a plain forward still runs to the logits
    assert out.logits.shape[:2] == enc["input_ids"].shape and not run.stopped
