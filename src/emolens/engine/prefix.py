"""The KV-prefix fast path: compute a batch's prompt prefix once, run only its last ``m`` tokens per condition.

An edit confined to the last ``m`` positions of each prompt (steering the answer cue, ablating or
patching at ``-1 .. -m``, knocking out edges *from* the cue) cannot change any earlier position of
a causal model. So the clean key/value cache of the first ``T - m`` columns of a left-padded batch
is shared by every such condition: :func:`prefix_cache` computes it once, :func:`tile_cache` copies
it (stacked once per condition, or forked for a continuation) without ever writing into it,
:func:`extend_prefix` turns the prefix for ``m`` into the one for a shorter suffix, and
:func:`suffix_inputs` gives the model inputs of the ``m``-token suffix on top of it. Positions in
the suffix are resolved against :func:`suffix_mask` (``Intervention(..., suffix=True)``), so
``-k`` means the same token as in a full forward. A cache that cannot be copied safely (static,
quantised, offloaded, linear-attention layers) gives ``None``, and callers run full forwards.
"""

from __future__ import annotations

import copy

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from emolens.inputs.batching import Batch


def tile_cache(cache, times: int, first: int = 0):
    """A copy of a key/value ``cache`` with every layer's batch stacked ``times`` over (row = t * B + i).

    Layers are copied shallowly and their tensors re-made (``repeat``), so running a forward on the
    copy never touches ``cache``; ``times = 1`` forks a cache for a continuation (the dynamic
    layers' ``update`` rebinds its tensors instead of writing into them). Layers below ``first``
    are shared untiled: a forward that starts at layer ``first`` (:mod:`emolens.engine.replay`)
    never reads them, and tiling them is most of a short suffix step's memory traffic. Returns ``None`` for a
    cache this cannot copy safely (static, quantised, indexed or linear-attention layers), so callers
    fall back to full forwards.
    """
    layers = getattr(cache, "layers", None)
    if not layers or getattr(cache, "offloading", False) \
            or any(type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers):
        return None
    new = copy.copy(cache)
    new.layers = []
    for i, layer in enumerate(layers):
        twin = copy.copy(layer)
        if i >= first and layer.is_initialized and layer.keys is not None and layer.keys.ndim == 4:
            twin.keys = layer.keys.repeat(times, 1, 1, 1) if times > 1 else layer.keys
            twin.values = layer.values.repeat(times, 1, 1, 1) if times > 1 else layer.values
        new.layers.append(twin)
    return new


def bytes_per_row(cache) -> int:
    """Bytes of one batch row of a key/value cache (all layers, keys and values)."""
    return sum(t[:1].numel() * t.element_size() for layer in cache.layers if layer.is_initialized
               for t in (layer.keys, layer.values) if t is not None)


def suffix_fits(batch: Batch, m: int) -> bool:
    """Whether every row has its last ``m`` columns real and at least one real token before them."""
    mask = batch.attention_mask
    return 1 <= m < mask.shape[1] and bool(mask[:, -m:].bool().all()) and int(mask[:, :-m].sum(1).min()) >= 1


@torch.no_grad()
def prefix_cache(model, batch: Batch, m: int = 1):
    """The clean key/value cache of every column but the last ``m`` (``None`` where the fast path cannot run).

    ``model`` is the causal LM module (``lm.model`` of a loaded model).
    """
    if not suffix_fits(batch, m):
        return None
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - a config DynamicCache cannot build: no fast path
        return None
    model(input_ids=batch.input_ids[:, :-m], attention_mask=batch.attention_mask[:, :-m],
             position_ids=batch.position_ids[:, :-m], cache=cache, use_cache=True, logits_to_keep=1)
    if cache.get_seq_length() != batch.input_ids.shape[1] - m:  # the model did not fill this cache
        return None
    return cache if tile_cache(cache, 1) is not None else None


@torch.no_grad()
def extend_prefix(model, batch: Batch, cache, m_from: int, m_to: int):
    """The prefix cache of all but the last ``m_to`` columns, from ``cache``, that of all but the last
    ``m_from > m_to``: runs the columns in between on a fork, so ``cache`` itself is kept.

    The same keys and values as :func:`prefix_cache` ``(model, batch, m_to)`` up to float rounding,
    for ``m_from - m_to`` columns of compute instead of ``T - m_to``.
    """
    T = batch.input_ids.shape[1]
    fork = tile_cache(cache, 1)
    if fork is None:
        return None
    model(input_ids=batch.input_ids[:, T - m_from:T - m_to], attention_mask=batch.attention_mask[:, :T - m_to],
             position_ids=batch.position_ids[:, T - m_from:T - m_to], cache=fork, use_cache=True, logits_to_keep=1)
    return fork


def suffix_inputs(batch: Batch, prefix, m: int = 1, times: int = 1, first: int = 0) -> dict:
    """Model inputs of the last ``m`` tokens, the batch stacked ``times`` over, on a copy of ``prefix``
    (tiled from layer ``first`` on: see :func:`tile_cache`)."""
    return dict(input_ids=batch.input_ids[:, -m:].repeat(times, 1),
                attention_mask=batch.attention_mask.repeat(times, 1),
                position_ids=batch.position_ids[:, -m:].repeat(times, 1),
                cache=tile_cache(prefix, times, first), use_cache=True)


def suffix_mask(batch: Batch, m: int = 1, times: int = 1) -> torch.Tensor:
    """The ``[times * B, m]`` mask that resolves positions inside the suffix (all real: see :func:`suffix_fits`)."""
    return batch.attention_mask[:, -m:].repeat(times, 1)
