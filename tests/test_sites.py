"""Site resolution and load-time validation on tiny models of every family."""

from __future__ import annotations

import pytest
import torch

from emolens.errors import EmolensError
from emolens.model.sites import SITES, find_site_paths, resolve_sites, validate_sites
from emolens.model.tiny import TINY_FAMILIES, tiny_model

POST_NORM = {"gemma2", "gemma3_text", "olmo2"}


@pytest.fixture(scope="module")
def batch(tiny_tok):
    return tiny_tok(["Context: My dog died. Answer:", "I saw food."], return_tensors="pt", padding=True)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_family_resolves_and_validates(family, batch):
    model = tiny_model(family)
    registry = resolve_sites(model)
    assert registry.family == family
    assert registry.n_layers == 3
    assert registry.post_norm == (family in POST_NORM)
    validate_sites(model, registry, batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
def test_each_site_has_declared_shape(family, batch):
    model = tiny_model(family)
    registry = resolve_sites(model)
    shapes = {}
    handles = [registry.point(s, 0).register(lambda v, s=s: shapes.update({s: v.shape})) for s in SITES]
    with torch.no_grad():
        model(**batch)
    for h in handles:
        h.remove()
    b, t = batch["input_ids"].shape
    for site in SITES:
        assert tuple(shapes[site]) == (b, t, *registry.width(site)), site
    assert shapes["heads"][-2:] == (registry.n_heads, registry.head_dim)


def test_post_norm_sites_differ_from_raw_block_outputs(batch):
    model = tiny_model("gemma3_text")
    registry = resolve_sites(model)
    got = {}
    handles = [registry.point(s, 1).register(lambda v, s=s: got.update({s: v.clone()}))
               for s in ("attn", "attn_post", "mlp", "mlp_post")]
    with torch.no_grad():
        model(**batch)
    for h in handles:
        h.remove()
    assert not torch.allclose(got["attn"], got["attn_post"])
    assert not torch.allclose(got["mlp"], got["mlp_post"])


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gemma3_text", "olmo2"])
def test_validation_passes_in_bfloat16(family, batch):
    # bf16 rounding inside the model's residual adds must not be mistaken for a wrong site.
    model = tiny_model(family).to(torch.bfloat16)
    validate_sites(model, resolve_sites(model), batch["input_ids"], batch["attention_mask"])


def test_wrong_override_breaks_sum_rule_and_is_reported(batch):
    model = tiny_model("gemma3_text")
    # Pretending Gemma is pre-norm (raw block outputs join the residual) must fail validation.
    registry = resolve_sites(model, {"attn_post": "self_attn", "mlp_post": "mlp"})
    with pytest.raises(EmolensError, match="sum rule"):
        validate_sites(model, registry, batch["input_ids"], batch["attention_mask"])


def test_unresolvable_family_is_a_clear_error():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(EmolensError, match="cannot find the decoder layers"):
        find_site_paths(Odd())
    with pytest.raises(EmolensError, match="unknown site override"):
        find_site_paths(Odd(), {"bogus": "x"})


def test_layer_out_of_range_and_unknown_site():
    registry = resolve_sites(tiny_model("llama"))
    with pytest.raises(EmolensError, match="out of range"):
        registry.point("resid", 3)
    with pytest.raises(EmolensError, match="unknown site"):
        registry.point("residual", 0)
    with pytest.raises(EmolensError, match="out of range"):
        registry.resolve_layers([0, 7])
    assert registry.resolve_layers("all") == [0, 1, 2]
    assert registry.resolve_layers("1:") == [1, 2]
    assert registry.resolve_layers(-1) == [2]
    assert registry.layer_count("final") == 1


def test_hook_removal_restores_logits_exactly(batch):
    model = tiny_model("qwen2")
    registry = resolve_sites(model)
    with torch.no_grad():
        clean = model(**batch).logits
        handle = registry.point("resid", 1).register(lambda v: v * 2)
        changed = model(**batch).logits
        handle.remove()
        again = model(**batch).logits
    assert not torch.equal(clean, changed)
    assert torch.equal(clean, again)


# ------------------------------------------------------------------------------- neurons site

MLP_OUT = {"gpt2": "mlp.c_proj", "gpt_neox": "mlp.dense_4h_to_h"}


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_neurons_site_is_the_output_projection_input(family, batch):
    """Shape = intermediate size, and the output projection applied to the neurons gives the MLP output."""
    model = tiny_model(family)
    registry = resolve_sites(model)
    assert registry.paths.mlp_out == MLP_OUT.get(family, "mlp.down_proj")
    config = model.config
    d_mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * config.n_embd
    assert registry.width("neurons") == (d_mlp,)
    assert "neurons" in registry.available_sites
    got = {}
    handles = [registry.point(s, layer).register(lambda v, k=(s, layer): got.update({k: v.clone()}))
               for s in ("neurons", "mlp") for layer in range(registry.n_layers)]
    with torch.no_grad():
        model(**batch)
        for h in handles:
            h.remove()
        for layer in range(registry.n_layers):
            neurons = got[("neurons", layer)]
            assert neurons.shape == (*batch["input_ids"].shape, d_mlp)
            rebuilt = registry.point("neurons", layer).module(neurons)
            torch.testing.assert_close(rebuilt, got[("mlp", layer)], rtol=1e-5, atol=1e-6)


def test_neurons_are_after_the_gate_times_up_product(batch):
    # llama: neurons = act(gate(x)) * up(x), recomputed from the MLP's own input
    model = tiny_model("llama")
    registry = resolve_sites(model)
    mlp = model.model.layers[1].mlp
    got = {}
    h1 = registry.point("neurons", 1).register(lambda v: got.update(n=v.clone()))
    h2 = mlp.register_forward_pre_hook(lambda m, args: got.update(x=args[0].clone()))
    with torch.no_grad():
        model(**batch)
        h1.remove()
        h2.remove()
        expected = mlp.act_fn(mlp.gate_proj(got["x"])) * mlp.up_proj(got["x"])
    torch.testing.assert_close(got["n"], expected)


def test_wrong_neurons_override_is_reported(batch):
    model = tiny_model("llama")
    # up_proj reads the residual (width d_model), not the neurons: the rebuild check must catch it
    registry = resolve_sites(model, {"mlp_out": "mlp.gate_proj"})
    with pytest.raises(EmolensError, match="neurons"):
        validate_sites(model, registry, batch["input_ids"], batch["attention_mask"])


def test_family_without_mlp_projection_has_no_neurons_site():
    model = tiny_model("llama")
    for layer in model.model.layers:
        layer.mlp.proj_out = layer.mlp.down_proj
        del layer.mlp.down_proj
    registry = resolve_sites(model)
    assert "neurons" not in registry.available_sites
    with pytest.raises(EmolensError, match="no 'neurons' site"):
        registry.point("neurons", 0)
    registry = resolve_sites(model, {"mlp_out": "mlp.proj_out"})
    assert registry.width("neurons") == (128,)
