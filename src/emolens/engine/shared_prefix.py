"""The shared-prompt-prefix fast path: the tokens every prompt starts with run once per pass, not once per item.

Why: a prompt template puts the same instruction before every item (on crowd-enVENT with the
default template, 34 of a mean 58 real tokens for qwen2.5, 35 for gemma-3), and a causal model
computes those positions identically for every item. A read at a position inside each item's own
tokens (the answer cue, ``-1``) therefore needs only the key/value cache of the shared tokens,
computed once, and a forward over each item's *remaining* tokens -- about half the token-layers of
a full forward here.

:func:`shared_prefix_length` finds how many leading tokens all prompts share (leaving every prompt
at least ``keep`` tokens of its own). :func:`suffix_batch` turns a left-padded batch of whole
prompts into the batch of their suffixes: its padding stays on the left of each suffix, so the
model sees ``[shared prefix][pads][suffix]`` with the pads masked and the suffix's position ids
continuing from the prefix -- the same attention pattern and positions as the full prompt. The
batch's ``attention_mask`` is the suffix part (for resolving positions like ``-1``); the model gets
the full mask (:attr:`SuffixBatch.model_kwargs`); :func:`run_suffix` is
:func:`emolens.engine.intervention.run_forward` for such a batch (ops see a cached forward as a
prefill over the suffix). A model whose cache cannot be copied safely (see
:func:`emolens.engine.prefix.tile_cache`) gives ``None`` from :func:`prefix_state`, and callers
run full forwards.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from emolens.engine.intervention import Intervention
from emolens.engine.ops import Op
from emolens.engine.prefix import tile_cache
from emolens.inputs.batching import Batch, position_ids_from_mask, shared_prefix_length

__all__ = ["SharedPrefix", "SuffixBatch", "laid_out_prefix", "pad_id", "prefix_state", "prompts_prefix",
           "run_suffix", "shared_prefix_length", "suffix_batch"]


def pad_id(lm) -> int:
    """The id :func:`suffix_batch` fills a suffix's padding with: the tokenizer's pad, else its end of text."""
    pad = getattr(lm.tokenizer, "pad_token_id", None)
    return int(pad if pad is not None else lm.tokenizer.eos_token_id)


@dataclass
class SharedPrefix:
    """The shared tokens' ids ``[P]`` and their key/value cache for one row."""

    ids: torch.Tensor
    cache: object
    window: int | None = None  # the model's sliding attention window, if it has one

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])


@torch.no_grad()
def prefix_state(model, ids: torch.Tensor) -> SharedPrefix | None:
    """Run the shared tokens once (batch of one) and keep their cache; ``None`` where that cannot be shared."""
    if ids.numel() == 0:
        return None
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - a config DynamicCache cannot build: no fast path
        return None
    row = ids.view(1, -1)
    positions = torch.arange(row.shape[1], device=row.device).view(1, -1)  # on the ids' device (a GPU run)
    model(input_ids=row, attention_mask=torch.ones_like(row), position_ids=positions, cache=cache, use_cache=True,
          logits_to_keep=1)
    if cache.get_seq_length() != row.shape[1] or tile_cache(cache, 1) is None:
        return None
    return SharedPrefix(ids.detach().clone(), cache, getattr(model.config, "sliding_window", None))


@dataclass
class SuffixBatch:
    """A batch of prompt suffixes on a shared prefix: ``input_ids``/``attention_mask`` cover the suffix."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    span_masks: dict[str, torch.Tensor] = field(default_factory=dict)
    indices: object = None
    model_kwargs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def suffix_batch(batch: Batch, prefix: SharedPrefix, pad_id: int) -> SuffixBatch | None:
    """``batch`` (left-padded whole prompts) as suffixes on ``prefix``; ``None`` when a row does not
    start with the prefix or has no token after it, or when the batch is wider than a sliding
    attention window (then run the full forward).

    Why the window test: the pads move from before the prefix to between prefix and suffix, so a
    suffix token's column distance to the prefix grows by its row's padding; a window masks by
    column distance, and distances stay below it only while the whole batch does.
    """
    P = prefix.length
    ids, mask = batch.input_ids, batch.attention_mask
    B, T = ids.shape
    if prefix.window and prefix.window < T:
        return None  # (a sliding window: moving pads between prefix and suffix lengthens distances up to T)
    if _starts_with_prefix(batch, prefix, keep=1) is None:
        return None
    # drop each row's first P real tokens: the suffix keeps its left padding, now P columns shorter
    suffix_mask = mask[:, : T - P]
    suffix_ids = torch.where(suffix_mask.bool(), ids[:, P:], torch.full_like(ids[:, P:], pad_id))
    positions = position_ids_from_mask(suffix_mask) + P
    full_mask = torch.cat([torch.ones(B, P, dtype=mask.dtype, device=mask.device), suffix_mask], 1)
    spans = {name: m[:, P:] & suffix_mask.bool() for name, m in batch.span_masks.items()}
    return SuffixBatch(suffix_ids, suffix_mask, positions, spans, batch.indices,
                       {"attention_mask": full_mask, "cache": tile_cache(prefix.cache, B), "use_cache": True})


def _starts_with_prefix(batch: Batch, prefix: SharedPrefix, keep: int) -> torch.Tensor | None:
    """Each left-padded row's first real column, or ``None`` unless every row starts with ``prefix``
    and keeps at least ``keep`` tokens of its own after it."""
    P = prefix.length
    ids, mask = batch.input_ids, batch.attention_mask
    lengths = mask.sum(1)
    if ids.shape[1] < P + keep or bool((lengths < P + keep).any()):
        return None
    starts = ids.shape[1] - lengths
    cols = starts.view(-1, 1) + torch.arange(P, device=ids.device).view(1, -1)
    if not bool((ids.gather(1, cols) == prefix.ids.to(ids.device).view(1, -1)).all()):
        return None
    return starts


def _laid_out(t: torch.Tensor, index: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """One row's cached states ``[1, H, P, D]`` placed per row at ``index [B, P]`` (zeros where not ``real``)."""
    got = t[0][:, index].permute(1, 0, 2, 3)  # [B, H, P, D]
    return torch.where(real[:, None, :, None], got, torch.zeros((), dtype=t.dtype, device=t.device))


@torch.no_grad()
def laid_out_prefix(model, batch: Batch, prefix: SharedPrefix, m: int = 1):
    """The clean cache of every column but the last ``m`` of ``batch`` -- what
    :func:`~emolens.engine.prefix.prefix_cache` computes, to float rounding -- built from the shared
    tokens' cache: ``None`` when a row does not start with ``prefix`` or keeps fewer than ``m`` own tokens.

    Why a second way to the same cache: the causal analyses and steering run every condition on a
    batch's clean prefix cache, and that prefix is mostly the template every prompt starts with.
    Unlike :func:`suffix_batch`, this keeps the batch's own column layout (left pads, then the
    shared tokens, then the item's own): a row's shared tokens do not depend on the pads before
    them (masked, and position ids count real tokens only), so their cached keys and values are
    the shared run's, placed at the row's columns. Only the columns from ``P`` on run. Because the
    layout is the batch's, the conditions' positions, named spans and attention-edge masks mean
    exactly what they mean on a whole-prompt prefix, and a sliding attention window sees the same
    column distances. Each layer must hold all ``P`` shared tokens (a sliding window longer than them).
    """
    T = batch.input_ids.shape[1]
    starts = _starts_with_prefix(batch, prefix, m)
    if m < 1 or starts is None:
        return None
    P = prefix.length
    layers = getattr(prefix.cache, "layers", None) or []
    if not layers or any(not layer.is_initialized or layer.keys is None or layer.keys.ndim != 4
                         or layer.keys.shape[-2] != P for layer in layers):
        return None
    device = batch.input_ids.device
    index = torch.arange(P, device=device).view(1, -1) - starts.view(-1, 1)  # shared token at each column
    real = index >= 0
    index = index.clamp(min=0)
    cache = copy.copy(prefix.cache)
    cache.layers = []
    for layer in layers:
        twin = copy.copy(layer)
        twin.keys = _laid_out(layer.keys, index.to(layer.keys.device), real.to(layer.keys.device))
        twin.values = _laid_out(layer.values, index.to(layer.values.device), real.to(layer.values.device))
        cache.layers.append(twin)
    if T - m > P:  # the columns after the shared ones, up to the suffix
        model(input_ids=batch.input_ids[:, P:T - m], attention_mask=batch.attention_mask[:, :T - m],
              position_ids=batch.position_ids[:, P:T - m], cache=cache, use_cache=True, logits_to_keep=1)
    return cache if cache.get_seq_length() == T - m else None


def prompts_prefix(lm, prompts: Sequence, keep: int = 1) -> SharedPrefix | None:
    """The leading tokens all ``prompts`` share (each keeping ``keep`` of its own), run once on ``lm``;
    ``None`` when there are none or the model's cache cannot be shared."""
    if len(prompts) < 2:
        return None
    ids = lm.tokenizer([p.text for p in prompts], add_special_tokens=True)["input_ids"]
    length = shared_prefix_length(ids, keep=max(1, int(keep)))
    if length < 1:
        return None
    return prefix_state(lm.model, torch.tensor(ids[0][:length], device=lm.device))


def run_suffix(lm, suffix: SuffixBatch, ops: Sequence[Op], need_logits: bool = False):
    """Run ``ops`` on the forward of ``suffix`` over its shared prefix; positions resolve against the
    suffix's own columns. Without ``need_logits`` the forward stops after the deepest layer ``ops``
    need. Returns ``(output, run)`` as :func:`~emolens.engine.intervention.run_forward` does (the
    output is the last position's logits' forward, or ``None`` when stopped early)."""
    run = Intervention(lm, list(ops), batch_mask=suffix.attention_mask, spans=suffix.span_masks,
                       stop_early=not need_logits, suffix=True)
    with torch.no_grad(), run:
        out = run.model(input_ids=suffix.input_ids, position_ids=suffix.position_ids, logits_to_keep=1,
                        **suffix.model_kwargs)
    return (out if need_logits else None), run
