"""The intervention engine: capture and edit activations at (site, layers, positions) with plain hooks.

Every later analysis -- ablation, patching, knockout, steering, extraction -- is a list of a few
ops (:mod:`emolens.engine.ops`) run inside one context manager around an ordinary forward or
``generate()`` call, on a loaded model or any plain ``nn.Module`` causal LM (its sites are then
resolved by structure, once)::

    with Intervention(lm, [Capture("resid", layers="all", positions=[-1, -2]),
                           Add("resid", layers=[5], positions=-1, value=vec)]) as run:
        out = lm.model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
    run.captures["resid"]          # [B, n_layers_requested, n_positions, d]

Why this shape:

* **One hook per (site, layer)** applies that point's ops in list order, so ``[Add, Capture]``
  captures the edited value and ``[Capture, Add]`` the clean one; there is no hidden ordering.
* **Positions are per row** (:class:`~emolens.engine.positions.Positions`): ints relative to the
  row's real tokens, resolved against the attention mask (the forward's own ``attention_mask``
  unless ``batch_mask`` is given), so left or right padding never shifts a position. Named spans
  and ``"all"`` are boolean masks ``[B, T]``; captures over them are mean-pooled.
* **Attention-edge knockout** (the ``Knockout`` op) edits the attention mask each chosen attention
  module receives, through a pre-hook on that module; both its query and key positions resolve
  against the forward's full attention mask.
* **Prefill vs decode.** A forward whose input is shorter than its attention mask is a cached
  decode step of ``generate()``. Ops act on the prefill only, unless ``every_token=True`` (also
  every newly generated token) or ``positions="generated"`` (only generated tokens).
* **Captures are gathered inside the hook** (only requested positions, optionally cast and moved
  to CPU without blocking), never whole ``[B, T, d]`` outputs.
* **Edits are out of place**: a hook returns a new tensor, so leaving the context (which removes
  every handle) restores the model exactly.
* **transformers' own recorders**: ``output_hidden_states=True`` installs persistent hooks the
  first time it is used; hooks fire in registration order, so those hidden states may show a
  layer's value *before* an edit at that layer. Capture what you need instead.
* **Early stop**: with ``stop_early=True`` the forward is cut after the deepest layer any op
  needs (a private exception, swallowed by the context); only for runs that need no logits.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from emolens.engine.ops import (
    Add,
    Apply,
    Capture,
    Knockout,
    Op,
    OpContext,
    Resample,
    Set,
    broadcast_value,
    check_maskable,
    edited_attention_mask,
)
from emolens.engine.positions import SPAN_NAMES
from emolens.errors import EmolensError
from emolens.inputs.batching import position_ids_from_mask
from emolens.model.sites import SiteRegistry, resolve_sites

__all__ = ["Intervention", "run_forward", "unwrap"]



# ------------------------------------------------------------------------------- engine


def _index_where(sel: torch.Tensor, x: torch.Tensor) -> tuple[str, torch.Tensor, torch.Tensor]:
    """Per-row indices ``[B, P]`` plus their flat form into ``x`` viewed as ``[B*T, ...]``."""
    rows = torch.arange(sel.shape[0], device=sel.device)[:, None]
    return "index", sel, (rows * x.shape[1] + sel).reshape(-1)


class _StopForward(Exception):
    """Raised by the stop hook once every needed layer has run; swallowed by the context."""


@dataclass(eq=False)
class _State:
    decode: bool = False
    mask: torch.Tensor | None = None
    full_mask: torch.Tensor | None = None
    forward_no: int = -1
    step: int = -1
    cache: dict = field(default_factory=dict)


_REGISTRIES: weakref.WeakKeyDictionary[nn.Module, SiteRegistry] = weakref.WeakKeyDictionary()


def unwrap(lm: Any) -> tuple[nn.Module, SiteRegistry]:
    """``(model, sites)`` of a loaded model or of a plain ``nn.Module`` (sites resolved by structure, once)."""
    if hasattr(lm, "sites") and hasattr(lm, "model"):
        return lm.model, lm.sites
    if isinstance(lm, nn.Module):
        if lm not in _REGISTRIES:
            _REGISTRIES[lm] = resolve_sites(lm)
        return lm, _REGISTRIES[lm]
    raise EmolensError(f"expected a causal LM (an nn.Module or a loaded model), got {type(lm).__name__}")


class Intervention:
    """Context manager applying a list of ops to every forward run inside it.

    ``batch_mask`` overrides the attention mask that resolves positions (default: the forward's
    own ``attention_mask``, or no padding); ``spans`` maps span names to ``[B, T]`` boolean masks
    (a ``Batch`` from :mod:`emolens.inputs.batching` carries them as ``span_masks``). Captures of
    successive prefill forwards in one context are concatenated along the batch dim.

    ``suffix=True`` says the forwards run the last tokens of prompts whose prefix is cached
    (:mod:`emolens.engine.prefix`): ops then act on a cached forward as on a prefill, with positions
    resolved against ``batch_mask`` (the suffix's columns), and captures land in :attr:`captures`.
    """

    def __init__(self, lm: Any, ops: Sequence[Op] | Op, batch_mask: torch.Tensor | None = None,
                 spans: Mapping[str, torch.Tensor] | None = None, stop_early: bool = False, suffix: bool = False):
        self.model, self.registry = unwrap(lm)
        self.ops = [ops] if isinstance(ops, Op) else list(ops)
        self.batch_mask = batch_mask
        self.spans = dict(spans or {})
        self.stop_early = stop_early
        self.suffix = suffix
        self.stopped = False
        self._handles: list = []
        self._state = _State()
        self._layers: list[list[int]] = []
        self._heads: list[torch.Tensor | None] = []
        self._caps: dict[str, dict[int, dict[int, torch.Tensor]]] = {}
        self._gen: dict[str, dict[int, dict[int, torch.Tensor]]] = {}
        self._final: dict[str, torch.Tensor] | None = None
        self._validate()

    # -- setup ------------------------------------------------------------------------------

    def _validate(self) -> None:
        keys: set[str] = set()
        for op in self.ops:
            if not isinstance(op, Op) or type(op) is Op:
                raise EmolensError(f"{op!r} is not an intervention op",
                                   "use Capture, Set, Add, Scale, Zero, Mean, Resample or Apply")
            self.registry.width(op.site)  # unknown site -> EmolensError
            self._layers.append(self.registry.resolve_layers(op.layers, op.site))
            self._heads.append(self._resolve_heads(op))
            pos = op.positions
            for p in (pos, op.keys) if isinstance(op, Knockout) else (pos,):
                if p.span in SPAN_NAMES and p.span not in self.spans:
                    raise EmolensError(f"span {p.span!r} requested but no span masks were given "
                                       "(pass spans= as [B, T] masks, e.g. batch.span_masks)")
            if isinstance(op, Knockout):
                check_maskable(self.model)
            if isinstance(op, Capture):
                if op.key in keys:
                    raise EmolensError(f"two captures named {op.key!r}", "give each Capture a distinct name=")
                keys.add(op.key)
                if op.pool not in (None, "mean"):
                    raise EmolensError(f"unknown pool {op.pool!r}", "use pool=None or pool='mean'")
                if op.pool is None and not pos.is_index and pos.span != "generated":
                    raise EmolensError(f"capturing positions {pos.label!r} needs pooling", "pass pool='mean'")
            if isinstance(op, (Set, Add)) and op.value is None:
                raise EmolensError(f"{type(op).__name__} at {op.site!r} has no value", "pass value=tensor")
            if isinstance(op, Resample) and op.source is None:
                raise EmolensError("Resample has no source pool", "pass source=tensor [N, layers, P, *width]")
            if isinstance(op, Apply) and op.fn is None:
                raise EmolensError("Apply has no fn", "pass fn=callable")

    def _resolve_heads(self, op: Op) -> torch.Tensor | None:
        if op.heads is None:
            return None
        if op.site != "heads" and not isinstance(op, Knockout):
            raise EmolensError(f"heads= given for site {op.site!r}", "restrict heads only at site 'heads'")
        heads = [op.heads] if isinstance(op.heads, int) else list(op.heads)
        n = self.registry.n_heads
        if not heads or any(not -n <= h < n for h in heads):
            raise EmolensError(f"heads {heads} out of range", f"use 0..{n - 1}")
        if isinstance(op, Knockout):  # a mask over the attention's head dim
            mask = torch.zeros(n, dtype=torch.bool)
            mask[[h % n for h in heads]] = True
            return mask
        return torch.tensor([h % n for h in heads])

    def stop_layer(self) -> int | None:
        """Index of the decoder layer *before which* the forward may stop (None: run to the end)."""
        deepest = -1
        for op, layers in zip(self.ops, self._layers, strict=True):
            if op.site == "final":
                return None
            deepest = max(deepest, -1 if op.site == "embed" else max(layers))
        return deepest + 1

    def __enter__(self) -> Intervention:
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._on_forward, with_kwargs=True))
            points: dict[tuple[str, int], list[int]] = {}
            for i, (op, layers) in enumerate(zip(self.ops, self._layers, strict=True)):
                for layer in layers:
                    points.setdefault((op.site, layer), []).append(i)
            for (site, layer), idx in points.items():
                point = self.registry.point(site, layer)
                knock = [i for i in idx if isinstance(self.ops[i], Knockout)]
                edits = [i for i in idx if i not in knock]
                if edits:
                    self._handles.append(point.register(self._make_hook(site, layer, edits)))
                if knock:
                    self._handles.append(point.module.register_forward_pre_hook(
                        self._make_knockout_hook(layer, knock), with_kwargs=True))
            stop = self.stop_layer() if self.stop_early else None
            if stop is not None and stop < self.registry.n_layers:
                self._handles.append(self.registry.layers[stop].register_forward_pre_hook(self._stop))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.remove()
        if exc_type is _StopForward:
            self.stopped = True
            return True
        return False

    def remove(self) -> None:
        """Remove every hook this intervention registered (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    @staticmethod
    def _stop(module, args):
        raise _StopForward

    # -- per-forward state -------------------------------------------------------------------

    def _on_forward(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        mask = kwargs.get("attention_mask")
        n_new = ids.shape[1] if ids is not None else None
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        cached = cache.get_seq_length() if hasattr(cache, "get_seq_length") else 0
        decode = not self.suffix and (bool(cached) or (mask is not None and mask.ndim == 2 and n_new is not None
                                                       and mask.shape[1] > n_new))
        self._state.decode = decode
        self._state.full_mask = mask if mask is not None and mask.ndim == 2 else None
        if not decode:
            self._state.forward_no += 1
            self._state.cache = {}
            self._state.mask = self.batch_mask if self.batch_mask is not None else (
                mask if mask is not None and mask.ndim == 2 else None)
            self._state.step = -1
            self._final = None
        else:
            self._state.step += 1
            self._state.cache = {}

    def _mask_for(self, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        mask = self._state.mask
        if mask is None or self._state.decode:
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if rows is not None:
            mask = mask[rows]
        if mask.shape != x.shape[:2]:
            raise EmolensError(f"attention mask of shape {tuple(mask.shape)} does not match activations "
                               f"{tuple(x.shape[:2])}", "pass batch_mask matching the batch")
        return mask.to(x.device)

    def _where(self, i: int, x: torch.Tensor) -> tuple[str, torch.Tensor] | None:
        """Op ``i``'s positions this forward: ("index", [B, P], flat) or ("mask", [B, T]), or None.

        ``x`` is already the op's own rows (:attr:`Op.rows`), which the positions resolve against.
        """
        op = self.ops[i]
        pos = op.positions
        rows = op.rows
        shared = pos.is_index and not self._state.decode  # ops with the same positions share one
        key = (pos.ints if shared else i, x.shape[0], x.shape[1], x.device,
               None if rows is None else (rows.start, rows.stop))
        if key in self._state.cache:
            return self._state.cache[key]
        if self._state.decode:
            active = op.every_token or pos.span == "generated"
            where = ("mask", torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)) if active else None
            if active and isinstance(op, Capture):
                where = _index_where(torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1), x)
        elif pos.span == "generated":
            where = None
        elif pos.is_index:
            where = _index_where(pos.index(self._mask_for(x, rows)), x)
        else:
            spans = self.spans if rows is None else {k: v[rows] for k, v in self.spans.items()}
            m = pos.mask(self._mask_for(x, rows), spans)
            if isinstance(op, Capture) and not bool(m.any(1).all()):
                raise EmolensError(f"span {pos.label!r} is empty in some row", "check the span masks")
            where = ("mask", m)
        self._state.cache[key] = where
        return where

    # -- the hook ------------------------------------------------------------------------------

    def _make_hook(self, site: str, layer: int, op_ids: list[int]):
        def hook(x: torch.Tensor) -> torch.Tensor | None:
            changed = False
            for i in op_ids:
                op = self.ops[i]
                rows = op.rows
                part = x if rows is None else x[rows]  # a stacked condition's own rows
                where = self._where(i, part)
                if where is None:
                    continue
                if isinstance(op, Capture):
                    self._capture(i, op, layer, part, where)
                    continue
                new = self._edit(i, op, layer, part, where)
                x = new if rows is None else torch.cat([x[:rows.start], new, x[rows.stop:]])
                changed = True
            return x if changed else None

        return hook

    def _make_knockout_hook(self, layer: int, op_ids: list[int]):
        def hook(module, args, kwargs):
            if self._state.decode:  # knockouts act on prompt forwards (and cached suffix steps) only
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            mask = kwargs.get("attention_mask")
            full = self._state.full_mask
            if full is None:
                full = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
            total, q_len = full.shape[1], hidden.shape[1]
            sliding = mask is not None and q_len < mask.shape[-1] < total  # a cached step's sliding-window layer
            if mask is not None and mask.shape[-1] != total and not sliding:
                raise EmolensError(f"attention mask covers {mask.shape[-1]} keys but the batch has {total}")
            kv_len = mask.shape[-1] if sliding else total
            block = None
            for i in op_ids:
                op = self.ops[i]
                cut = op.block(op.positions.mask(full, self.spans), op.keys.mask(full, self.spans), q_len, kv_len,
                               self._heads[i], hidden.device)
                if op.rows is not None:  # a stacked condition: only its own rows lose edges
                    own = torch.zeros(cut.shape[0], dtype=torch.bool, device=cut.device)
                    own[op.rows] = True
                    cut = cut & own[:, None, None, None]
                block = cut if block is None else block | cut
            if block is None or not bool(block.any()):
                return None
            return args, {**kwargs, "attention_mask": edited_attention_mask(mask, block, total, q_len, hidden.device)}

        return hook

    def _capture(self, i: int, op: Capture, layer: int, x: torch.Tensor, where) -> None:
        kind, sel = where[:2]
        heads = self._heads[i]
        if kind == "index":  # one gather of just the requested rows: [B, P, *w] (a copy)
            got = x.reshape(-1, *x.shape[2:]).index_select(0, where[2]).view(*sel.shape, *x.shape[2:])
            if op.pool == "mean":
                got = got.mean(1, keepdim=True)
        else:
            m = sel.to(x.dtype).view(*sel.shape, *([1] * (x.ndim - 2)))
            got = (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)
        if heads is not None:
            got = got[:, :, heads.to(x.device)]
        got = got.detach()
        if op.dtype is not None:
            got = got.to(op.dtype)
        if op.device is not None:
            got = _to_device(got, torch.device(op.device))
        store = self._gen if self._state.decode else self._caps
        step = self._state.step if self._state.decode else self._state.forward_no
        store.setdefault(op.key, {}).setdefault(step, {})[layer] = got
        self._final = None

    def _value(self, i: int, op: Op, layer: int, x: torch.Tensor, where) -> torch.Tensor | float | None:
        layers = self._layers[i]
        width_ndim = x.ndim - 2
        if isinstance(op, Resample):
            pool = op.source
            if op.index is None:
                gen = torch.Generator().manual_seed(op.seed)
                index = torch.randint(pool.shape[0], (x.shape[0],), generator=gen)
            else:
                index = torch.as_tensor(op.index)
            value = pool[index.to(pool.device)]
            dims: str | None = "blp"
        else:
            value, dims = op.value_tensor, getattr(op, "dims", None)
        if value is None or isinstance(value, (int, float)):
            return value
        value = broadcast_value(value, len(layers), x.shape[0], width_ndim, dims)
        value = value[:, layers.index(layer) if value.shape[1] > 1 else 0].to(x.device)  # [B|1, P|1, *w]
        if where[0] == "mask" and value.shape[1] != 1:
            raise EmolensError("a value with a position dim cannot apply to a span or 'all'",
                               "give one value for every position of the span")
        heads = self._heads[i]
        if heads is not None and value.shape[2] == self.registry.n_heads and len(heads) != value.shape[2]:
            value = value[:, :, heads.to(value.device)]
        return value

    def _context(self, op: Op, layer: int) -> OpContext:
        return OpContext(op.site, layer, op.positions, self._state.step if self._state.decode else None)

    def _edit(self, i: int, op: Op, layer: int, x: torch.Tensor, where) -> torch.Tensor:
        kind, sel = where[:2]
        value = self._value(i, op, layer, x, where)
        heads = self._heads[i]
        if kind == "index":
            rows = torch.arange(x.shape[0], device=x.device)[:, None]
            if heads is None:
                index = (rows, sel)
            else:
                hs = heads.to(x.device)
                index = (rows[:, :, None], sel[:, :, None], hs[None, None, :])
            new = op.edit(x[index], value, self._context(op, layer))
            return x.index_put(index, new.to(x.dtype))
        # mask: compute on the whole tensor, keep where selected
        target = x if heads is None else x[:, :, heads.to(x.device)]
        new = op.edit(target, value, self._context(op, layer))
        m = sel.view(*sel.shape, *([1] * (x.ndim - 2)))
        if heads is None:
            return torch.where(m, new.to(x.dtype), x)
        out = x.clone()
        out[:, :, heads.to(x.device)] = torch.where(m, new.to(x.dtype), target)
        return out

    # -- results -----------------------------------------------------------------------------

    def _stack(self, store: dict[str, dict[int, dict[int, torch.Tensor]]], cat_dim: int
               ) -> dict[str, torch.Tensor]:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # non-blocking device->host copies must land before reading
        out = {}
        for i, op in enumerate(self.ops):
            if not isinstance(op, Capture) or op.key not in store:
                continue
            layers = self._layers[i]
            chunks = [torch.stack([c[layer] for layer in layers], 1)
                      for _, c in sorted(store[op.key].items()) if all(layer in c for layer in layers)]
            if chunks:
                out[op.key] = chunks[0] if len(chunks) == 1 else torch.cat(chunks, cat_dim)
        return out

    @property
    def captures(self) -> dict[str, torch.Tensor]:
        """Prefill captures by name: ``[B, n_layers, P, *width]`` (P = 1 when pooled)."""
        if self._final is None:
            self._final = self._stack(self._caps, 0)
        return self._final

    @property
    def generated(self) -> dict[str, torch.Tensor]:
        """Captures of generated tokens (``every_token``/``"generated"``): ``[B, layers, steps, *width]``."""
        return self._stack(self._gen, 2)

    def clear(self) -> None:
        """Drop captures collected so far (e.g. between batches in one long-lived context)."""
        self._caps.clear()
        self._gen.clear()
        self._final = None
        self._state.forward_no = -1


# ------------------------------------------------------------------------------- helpers


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a captured slice; accelerator -> CPU goes through pinned memory without a host sync.

    A pageable copy would stall the host once per hooked layer (most of the capture cost on a
    GPU); a pinned non-blocking copy lets the forward keep launching, and the context
    synchronises once when captures are read.
    """
    if t.device == device:
        return t
    if device.type == "cpu" and t.device.type == "cuda":
        dst = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
        return dst.copy_(t, non_blocking=True)
    return t.to(device)


def _field(batch: Any, name: str):
    if isinstance(batch, Mapping):
        return batch.get(name)
    return getattr(batch, name, None)


def run_forward(lm: Any, batch: Any, ops: Sequence[Op], need_logits: bool = True,
                **forward_kwargs) -> tuple[Any, Intervention]:
    """One forward of ``batch`` (a ``Batch``, ``BatchEncoding`` or dict) with ``ops`` applied.

    Passes position ids derived from the mask when the batch has none (HF models otherwise count
    positions from the first pad). Without ``need_logits`` the forward stops after the deepest
    layer any op needs and the returned output is ``None``; with no ops that would be no forward
    at all, so it is refused rather than returning an empty run. Span masks of a ``Batch``
    (``span_masks``) are used for named positions.
    """
    if not need_logits and not ops:
        raise EmolensError("run_forward without ops and with need_logits=False has nothing to compute",
                           "pass the ops to apply, or need_logits=True for a plain forward")
    model, _ = unwrap(lm)
    ids = _field(batch, "input_ids")
    mask = _field(batch, "attention_mask")
    pos = _field(batch, "position_ids")
    if pos is None and mask is not None:
        pos = position_ids_from_mask(mask)
    kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "use_cache": False}
    kwargs.update(forward_kwargs)
    if not need_logits:
        kwargs.setdefault("logits_to_keep", 1)
    spans = _field(batch, "span_masks")
    run = Intervention(lm, ops, batch_mask=mask, spans=spans, stop_early=not need_logits)
    out = None
    with torch.no_grad(), run:
        out = model(**kwargs)
    return (out if need_logits else None), run
