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
