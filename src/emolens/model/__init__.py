"""Models: stock Hugging Face causal LMs loaded with a validated site registry, and tiny random ones for tests.

:func:`load_model` returns a :class:`LoadedModel` (module, tokenizer, sites); the site registry
(:mod:`emolens.model.sites`) names ``resid``, ``attn``, ``mlp``, ... per layer for every family.
"""

from emolens.model.loading import LoadedModel, load_model, resolve_device, resolve_dtype
from emolens.model.sites import SiteRegistry, resolve_sites, validate_sites
from emolens.model.tiny import tiny_model

__all__ = ["LoadedModel", "SiteRegistry", "load_model", "resolve_device", "resolve_dtype", "resolve_sites",
           "tiny_model", "validate_sites"]
