"""The site registry: canonical activation sites of any decoder-only model, on stock modules.

Tak et al. forked each family's modeling file to add hook points. We instead find, by module
structure, the stock ``transformers`` modules whose inputs or outputs *are* those sites, and hook
them with ordinary forward hooks:

=========== ================================================================================
site        what it is
=========== ================================================================================
``resid``     decoder-layer output: the residual stream after layer ``l`` (paper loc 7)
``attn``      attention block output before it joins the residual, before any post-norm (loc 3)
``mlp``       MLP block output before the residual, before any post-norm (loc 6)
``attn_post`` what the attention block actually adds to the residual: the post-attention norm's
              output in post-norm families (Gemma-2/3, OLMo-2), else the same as ``attn``
``mlp_post``  likewise for the MLP block
``heads``     per-head outputs, the input of the attention output projection, ``[.., H, head_dim]``
``neurons``   MLP neurons: the input of the MLP's output projection (``down_proj``, ``c_proj``,
              ``dense_4h_to_h``, ``fc2``, ...), i.e. after the activation and, in gated MLPs, after
              gate x up -- the only place a "neuron" has one meaning in every family
``embed``     the residual stream entering layer 0 (embeddings, scaled where the family scales)
``final``     the final norm's output (what the LM head reads)
=========== ================================================================================

``embed`` and ``final`` have a single layer index, 0. The sum rule
``resid[l] = resid[l-1] + attn_post[l] + mlp_post[l]`` (``resid[-1]`` = ``embed``) holds for every
family with sequential or parallel residual blocks; :func:`validate_sites` checks it on load, so a
family whose structure fools the resolver is an error instead of a silently wrong site.
Likewise ``mlp_out(neurons[l]) == mlp[l]`` (the output projection applied to the captured
neurons gives the MLP's output back) is checked for every family with a dense MLP; a family
whose MLP has no single output projection (mixture-of-experts) simply has no ``neurons`` site.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from emolens.errors import EmolensError

LAYER_SITES: tuple[str, ...] = ("resid", "attn", "mlp", "attn_post", "mlp_post", "heads", "neurons")
GLOBAL_SITES: tuple[str, ...] = ("embed", "final")
SITES: tuple[str, ...] = LAYER_SITES + GLOBAL_SITES

#: Families we test (tiny random models of each in the test suite).
KNOWN_FAMILIES: tuple[str, ...] = (
    "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo", "olmo2", "gpt2", "gpt_neox",
)

_LAYER_LISTS = ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers",
                "model.decoder.layers", "transformer.layers")
_ATTN = ("self_attn", "attn", "attention", "self_attention")
_MLP = ("mlp", "feed_forward", "ffn")
_OUT_PROJ = ("o_proj", "c_proj", "dense", "out_proj")
_MLP_OUT = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "fc_out", "w2", "wo")
_FINAL_NORM = ("model.norm", "model.language_model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm",
               "model.final_layernorm", "model.decoder.final_layer_norm", "transformer.norm_f")


@dataclass(frozen=True)
class SitePaths:
    """Dotted module paths that define the sites; layer-relative paths start from one layer.

    Pass a mapping with these keys as ``overrides`` to :func:`resolve_sites` for a family the
    structural search does not know (e.g. ``{"attn": "attention_block"}``).
    """

    layers: str
    attn: str
    mlp: str
    out_proj: str
    final_norm: str
    attn_post: str | None = None
    mlp_post: str | None = None
    mlp_out: str | None = None


@dataclass(frozen=True)
class HookPoint:
    """One site at one layer: a module and whether the site is its output or its first input.

    :meth:`register` is the single primitive every capture and intervention is built on: ``fn``
    receives the site's tensor and returns a replacement (or ``None`` to leave it untouched).
    """

    site: str
    layer: int
    module: nn.Module
    kind: str  # "output" or "input"
    n_heads: int | None = None

    def get(self, args: tuple, kwargs: dict, output: Any = None) -> torch.Tensor:
        if self.kind == "input":
            value = args[0] if args else kwargs["hidden_states"]
        else:
            value = output if isinstance(output, torch.Tensor) else output[0]
        if self.n_heads is not None:
            value = value.unflatten(-1, (self.n_heads, -1))
        return value

    def _put(self, args: tuple, kwargs: dict, output: Any, value: torch.Tensor):
        if self.n_heads is not None:
            value = value.flatten(-2)
        if self.kind == "input":
            if args:
                return (value, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": value}
        if isinstance(output, torch.Tensor):
            return value
        return (value, *output[1:])

    def register(self, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> torch.utils.hooks.RemovableHandle:
        """Attach ``fn``; returns the handle whose ``remove()`` restores the module exactly."""
        if self.kind == "input":
            def pre_hook(module, args, kwargs):
                new = fn(self.get(args, kwargs))
                return None if new is None else self._put(args, kwargs, None, new)

            return self.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

        def hook(module, args, kwargs, output):
            new = fn(self.get(args, kwargs, output))
            return None if new is None else self._put(args, kwargs, output, new)

        return self.module.register_forward_hook(hook, with_kwargs=True)


@dataclass
class SiteRegistry:
    """Resolved sites of one model; ``point(site, layer)`` gives the :class:`HookPoint`."""

    family: str
    paths: SitePaths
    layers: list[nn.Module]
    final_norm: nn.Module
    n_heads: int
    head_dim: int
    d_model: int
    post_norm: bool
    _modules: Mapping[str, list[nn.Module]] = field(default_factory=dict, repr=False)
    #: width of the ``neurons`` site (the MLP's intermediate size); None where it is unavailable
    d_mlp: int | None = None
    #: why the ``neurons`` site is unavailable (None when it is available)
    neurons_missing: str | None = None

    @property
    def available_sites(self) -> tuple[str, ...]:
        """The sites this model has: all of :data:`SITES`, less ``neurons`` where it cannot be resolved."""
        return tuple(s for s in SITES if s != "neurons" or self.d_mlp is not None)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def layer_count(self, site: str) -> int:
        """How many layer indices a site has (1 for ``embed`` and ``final``)."""
        self._check_site(site)
        return 1 if site in GLOBAL_SITES else self.n_layers

    def width(self, site: str) -> tuple[int, ...]:
        """Trailing shape of one position's activation at a site."""
        self._check_site(site)
        if site == "neurons":
            self._check_neurons()
            return (self.d_mlp,)
        return (self.n_heads, self.head_dim) if site == "heads" else (self.d_model,)

    def point(self, site: str, layer: int = 0) -> HookPoint:
        self._check_site(site)
        count = self.layer_count(site)
        if not -count <= layer < count:
            raise EmolensError(f"layer {layer} is out of range for site {site!r} ({count} layer(s))",
                               f"use 0..{count - 1} or a negative index")
        layer = layer % count
        if site == "embed":
            return HookPoint(site, 0, self.layers[0], "input")
        if site == "final":
            return HookPoint(site, 0, self.final_norm, "output")
        if site == "heads":
            return HookPoint(site, layer, self._modules["heads"][layer], "input", n_heads=self.n_heads)
        if site == "neurons":
            self._check_neurons()
            return HookPoint(site, layer, self._modules["neurons"][layer], "input")
        return HookPoint(site, layer, self._modules[site][layer], "output")

    def resolve_layers(self, layers: str | int | list[int] | range | None, site: str = "resid") -> list[int]:
        """``"all"``/``None``, an int, a list, a range or ``"a:b"``/``"a,b,c"`` -> sorted layer ids."""
        count = self.layer_count(site)
        if layers is None or layers == "all":
            return list(range(count))
        if isinstance(layers, str):
            text = layers.strip()
            try:
                if ":" in text:  # a range must lie inside the model, like a single layer (never clamped)
                    start, stop = (int(x) if x.strip() else None for x in text.split(":", 1))
                    for bound in (start, None if stop is None else stop - (stop > 0)):
                        if bound is not None and not -count <= bound < count:
                            raise EmolensError(f"layer range {text!r} reaches layer {bound}, out of range for "
                                               f"site {site!r} ({count} layer(s))", f"use bounds within 0..{count}")
                    chosen = list(range(count))[slice(start, stop)]
                    if not chosen:
                        raise EmolensError(f"layer range {text!r} is empty", f"use a:b with a < b within 0..{count}")
                    return chosen
                layers = [int(x) for x in text.split(",") if x.strip()]
            except ValueError as exc:
                raise EmolensError(f"bad layers {layers!r}", "use 'all', '3', '2,5,7' or 'a:b'") from exc
        if isinstance(layers, int):
            layers = [layers]
        out = []
        for layer in layers:
            if not -count <= layer < count:
                raise EmolensError(f"layer {layer} is out of range for site {site!r} ({count} layer(s))",
                                   f"use 0..{count - 1} or a negative index")
            out.append(layer % count)
        return sorted(set(out))

    def _check_site(self, site: str) -> None:
        if site not in SITES:
            raise EmolensError(f"unknown site {site!r}", f"use one of {list(SITES)}")

    def _check_neurons(self) -> None:
        if self.d_mlp is None:
            raise EmolensError(f"model family {self.family!r} has no 'neurons' site: {self.neurons_missing}",
                               "pass a site override {'mlp_out': '<mlp>.<output projection>'} or use 'mlp'")


def _get(root: nn.Module, path: str) -> nn.Module | None:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


def _first(root: nn.Module, candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if _get(root, c) is not None), None)


def find_site_paths(model: nn.Module, overrides: Mapping[str, str] | None = None) -> SitePaths:
    """Find the module paths of the sites by structure; ``overrides`` wins for any key it has."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(SitePaths.__dataclass_fields__)
    if unknown:
        raise EmolensError(f"unknown site override key(s) {sorted(unknown)}",
                           f"use keys from {list(SitePaths.__dataclass_fields__)}")
    family = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    layers_path = overrides.get("layers") or _first(model, _LAYER_LISTS)
    layer_list = _get(model, layers_path) if layers_path else None
    if not isinstance(layer_list, nn.ModuleList) or len(layer_list) == 0:
        raise EmolensError(f"cannot find the decoder layers of model family {family!r}",
                           "pass site overrides such as {'layers': 'model.layers'}")
    layer = layer_list[0]
    attn = overrides.get("attn") or _first(layer, _ATTN)
    mlp = overrides.get("mlp") or _first(layer, _MLP)
    out_proj = overrides.get("out_proj") or (attn and next(
        (f"{attn}.{c}" for c in _OUT_PROJ if _get(layer, f"{attn}.{c}") is not None), None))
    final_norm = overrides.get("final_norm") or _first(model, _FINAL_NORM)
    missing = [k for k, v in {"attn": attn, "mlp": mlp, "out_proj": out_proj, "final_norm": final_norm}.items()
               if not v]
    if missing:
        raise EmolensError(f"cannot resolve site(s) {missing} for model family {family!r}",
                           "pass site overrides naming those modules")
    post_norm = _get(layer, "post_feedforward_layernorm") is not None
    attn_post = overrides.get("attn_post") or ("post_attention_layernorm" if post_norm else None)
    mlp_post = overrides.get("mlp_post") or ("post_feedforward_layernorm" if post_norm else None)
    mlp_out = overrides.get("mlp_out") or next(
        (f"{mlp}.{c}" for c in _MLP_OUT if _get(layer, f"{mlp}.{c}") is not None), None)
    return SitePaths(layers=layers_path, attn=attn, mlp=mlp, out_proj=out_proj, final_norm=final_norm,
                     attn_post=attn_post, mlp_post=mlp_post, mlp_out=mlp_out)


def _in_features(module: nn.Module) -> int | None:
    """Input width of a projection: ``nn.Linear`` or GPT-2's transposed ``Conv1D`` (weight ``[in, out]``)."""
    if isinstance(module, nn.Linear):
        return module.in_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.ndim == 2:
        return int(weight.shape[0])
    return None


def _neuron_modules(layers: list[nn.Module], path: str | None) -> tuple[list[nn.Module], int | None, str | None]:
    """The output projection of every layer's MLP, their common input width, or why there is none."""
    if path is None:
        return [], None, "its MLP has no known output projection (down_proj, c_proj, dense_4h_to_h, fc2, ...)"
    modules = [_get(layer, path) for layer in layers]
    if any(m is None for m in modules):
        return [], None, f"module {path!r} is missing in some layers"
    widths = {_in_features(m) for m in modules}
    if None in widths:
        return [], None, f"{path!r} is not a linear projection"
    if len(widths) != 1:
        return [], None, f"the MLP width differs across layers ({sorted(widths)})"
    return modules, widths.pop(), None


def resolve_sites(model: nn.Module, overrides: Mapping[str, str] | None = None) -> SiteRegistry:
    """Build the :class:`SiteRegistry` of a loaded causal LM."""
    paths = find_site_paths(model, overrides)
    layers = list(_get(model, paths.layers))
    config = model.config
    text_config = getattr(config, "get_text_config", lambda: config)()
    d_model = getattr(text_config, "hidden_size", None) or text_config.n_embd
    n_heads = getattr(text_config, "num_attention_heads", None) or text_config.n_head
    head_dim = getattr(text_config, "head_dim", None) or d_model // n_heads

    def per_layer(rel: str | None, fallback: str) -> list[nn.Module]:
        modules = [_get(layer, rel or fallback) for layer in layers]
        if any(m is None for m in modules):
            raise EmolensError(f"module {rel or fallback!r} is missing in some layers of {config.model_type!r}",
                               "pass site overrides for this family")
        return modules

    modules = {
        "resid": layers,
        "attn": per_layer(paths.attn, paths.attn),
        "mlp": per_layer(paths.mlp, paths.mlp),
        "attn_post": per_layer(paths.attn_post, paths.attn),
        "mlp_post": per_layer(paths.mlp_post, paths.mlp),
        "heads": per_layer(paths.out_proj, paths.out_proj),
    }
    modules["neurons"], d_mlp, missing = _neuron_modules(layers, paths.mlp_out)
    return SiteRegistry(family=config.model_type, paths=paths, layers=layers,
                        final_norm=_get(model, paths.final_norm), n_heads=n_heads, head_dim=head_dim,
                        d_model=d_model, post_norm=paths.mlp_post is not None, _modules=modules,
                        d_mlp=d_mlp, neurons_missing=missing)


@torch.no_grad()
def validate_sites(model: nn.Module, registry: SiteRegistry, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None = None, rtol: float = 0.05) -> None:
    """Cheap load-time checks that the registry is right for this model.

    The sum-rule tolerance is relative to the largest residual value: a wrong site (a missed
    post-norm, a wrong module) is off by about 100%, while bf16 rounding of the model's own adds
    stays below 1%, so 5% separates the two on any dtype and device.

    One forward with every site captured checks that each site fires exactly once per layer with
    the expected shape and that the sum rule holds; a second forward with a no-op hook on every
    site checks that logits are bit-identical to a hook-free forward. The ``neurons`` site is
    checked by re-applying the output projection to the captured neurons: it must give the MLP
    output back (same tolerance), which proves the hook sits on the projection that *is* the
    MLP's last step, not on some inner layer of the same name.
    """
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    clean = model(**kwargs).logits
    seen: dict[tuple[str, int], list[torch.Tensor]] = {}
    handles = []
    sites = registry.available_sites
    for site in sites:
        for layer in range(registry.layer_count(site)):
            point = registry.point(site, layer)
            handles.append(point.register(lambda v, key=(site, layer): seen.setdefault(key, []).append(v.clone())))
    try:
        hooked = model(**kwargs).logits
    finally:
        for h in handles:
            h.remove()
    if not torch.equal(clean, hooked):
        raise EmolensError(f"a no-op hook changed the logits of {registry.family!r}",
                           "report this model family; pass validate=False to load it anyway")
    batch, seq = input_ids.shape
    for site in sites:
        for layer in range(registry.layer_count(site)):
            got = seen.get((site, layer), [])
            if len(got) != 1:
                raise EmolensError(f"site {site!r} layer {layer} fired {len(got)} times in one forward of "
                                   f"{registry.family!r}", "pass site overrides naming the right module")
            expected = (batch, seq, *registry.width(site))
            if tuple(got[0].shape) != expected:
                raise EmolensError(f"site {site!r} layer {layer} has shape {tuple(got[0].shape)}, expected "
                                   f"{expected}", "pass site overrides naming the right module")
    prev = seen[("embed", 0)][0].float()
    for layer in range(registry.n_layers):
        resid = seen[("resid", layer)][0].float()
        predicted = prev + seen[("attn_post", layer)][0].float() + seen[("mlp_post", layer)][0].float()
        err = (resid - predicted).abs().max().item()
        scale = resid.abs().max().item() + 1e-6
        if err > rtol * scale:
            raise EmolensError(
                f"sites of {registry.family!r} break the sum rule at layer {layer} (max error {err:.3g} against "
                f"max |resid| {scale:.3g})", "pass site overrides (attn_post/mlp_post) for this family")
        prev = resid
    if "neurons" in sites:
        _check_neuron_identity(registry, seen, rtol)


def _check_neuron_identity(registry: SiteRegistry, seen: Mapping[tuple[str, int], list[torch.Tensor]],
                           rtol: float) -> None:
    """``mlp_out(neurons) == mlp`` at every layer (dropout is off in eval mode)."""
    for layer in range(registry.n_layers):
        proj = registry.point("neurons", layer).module
        neurons, mlp = seen[("neurons", layer)][0], seen[("mlp", layer)][0]
        rebuilt = proj(neurons).float()
        if rebuilt.shape != mlp.shape:
            raise EmolensError(
                f"the 'neurons' site of {registry.family!r} at layer {layer} feeds a projection of width "
                f"{rebuilt.shape[-1]}, not the MLP output width {mlp.shape[-1]}",
                "pass a site override {'mlp_out': '<mlp>.<output projection>'} for this family")
        err = (rebuilt - mlp.float()).abs().max().item()
        scale = mlp.float().abs().max().item() + 1e-6
        if err > rtol * scale:
            raise EmolensError(
                f"the 'neurons' site of {registry.family!r} at layer {layer} does not rebuild the MLP output "
                f"(max error {err:.3g} against max |mlp| {scale:.3g})",
                "pass a site override {'mlp_out': '<mlp>.<output projection>'} for this family")
