"""Attention-edge knockout: stop chosen query positions from reading chosen key positions.

Tak et al. only *inspect* attention (paper-protocol §6.4). To test whether the answer cue needs to
read the context (or the shots) at some layers, we block those query->key edges and measure the
readout. Blocking an edge is what an attention mask already does -- the edge gets ``-inf`` before
the softmax, so the row renormalises over the keys that remain -- so we edit the mask instead of
the weights. That keeps fast kernels (SDPA) in play: a ``forward_pre_hook`` on each chosen layer's
attention module rewrites only that layer's ``attention_mask`` keyword.

transformers 5.x hands every attention module (llama, gemma2/3, qwen2/3, mistral, phi3, olmo,
gpt2, gpt_neox) ``attention_mask=`` as a keyword: a float additive mask ``[B, 1, Tq, Tk]`` for
eager attention, a boolean one (True = attend) for SDPA, or ``None`` when SDPA may rely on
``is_causal`` (no padding, no active sliding window). Sliding-window layers of Gemma get their own
mask, which we edit the same way, so the window is kept. When the mask is ``None`` we build the
plain causal mask it stands for. Queries are aligned to the end of the keys, so the same hook
serves a full prompt forward and an ``m``-token step on top of a cached prefix; on a cached step a
sliding-window layer's mask covers only the keys its cache kept, the last ones, and the blocked
keys are aligned to the end too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from emolens.engine.intervention import position_index
from emolens.errors import EmolensError

#: Attention implementations whose kernels take an arbitrary 4D mask.
MASKABLE = ("eager", "sdpa")
KeySpec = str | int | Sequence[int] | torch.Tensor


def positions_mask(batch, spec: KeySpec) -> torch.Tensor:
    """``[B, T]`` boolean mask of a position spec: a span name, ``"all"``, ints, or a mask itself.

    Ints follow :mod:`emolens.engine.intervention`: negative from the row's last real token, non-negative from
    its first, so padding never shifts them.
    """
    mask = batch.attention_mask.bool()
    if isinstance(spec, torch.Tensor):
        if spec.shape != mask.shape:
            raise EmolensError(f"position mask of shape {tuple(spec.shape)} does not match the batch "
                               f"{tuple(mask.shape)}", "give one [B, T] mask per batch")
        return spec.to(mask.device, torch.bool) & mask
    if isinstance(spec, str):
        if spec == "all":
            return mask
        if spec == "none":
            return torch.zeros_like(mask)
        if spec not in batch.span_masks:
            raise EmolensError(f"unknown span {spec!r}", f"use 'all', ints, or one of {list(batch.span_masks)}")
        return batch.span_masks[spec].bool() & mask
    ints = [spec] if isinstance(spec, int) else list(spec)
    out = torch.zeros_like(mask)
    if ints:
        idx = position_index(batch.attention_mask, ints)
        out.scatter_(1, idx, True)
    return out


def check_maskable(lm) -> None:
    """Refuse attention kernels that ignore a 4D mask, rather than knock out nothing silently."""
    impl = getattr(lm.model.config, "_attn_implementation", "eager")
    if impl not in MASKABLE:
        raise EmolensError(f"attention knockout needs an eager or SDPA attention kernel, this model uses {impl!r}",
                           "load the model with attn_implementation='sdpa'")


class EdgeKnockout:
    """Context manager blocking ``query -> key`` attention edges at ``layers`` (optionally some heads).

    ``queries`` and ``keys`` are ``[B, T]`` boolean masks over the batch's full length (see
    :func:`positions_mask`). With nothing to block, no hook is installed, so an empty knockout is
    bit-identical to a plain forward.
    """

    def __init__(self, lm, layers: Sequence[int], queries: torch.Tensor, keys: torch.Tensor,
                 heads: Sequence[int] | None = None):
        check_maskable(lm)
        self.lm = lm
        self.layers = lm.sites.resolve_layers(list(layers), "attn")
        self.queries, self.keys = queries.bool(), keys.bool()
        n = lm.sites.n_heads
        self.head_mask = None
        if heads is not None:
            heads = list(heads)
            if not heads or any(not -n <= h < n for h in heads):
                raise EmolensError(f"heads {heads} out of range", f"use 0..{n - 1}")
            self.head_mask = torch.zeros(n, dtype=torch.bool, device=queries.device)
            self.head_mask[[h % n for h in heads]] = True
        self._handles: list = []

    @property
    def empty(self) -> bool:
        return not bool((self.queries.any(1) & self.keys.any(1)).any()) or not self.layers

    def __enter__(self) -> EdgeKnockout:
        if not self.empty:
            for layer in self.layers:
                module = self.lm.sites.point("attn", layer).module
                self._handles.append(module.register_forward_pre_hook(self._hook, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        while self._handles:
            self._handles.pop().remove()

    def block(self, q_len: int, device: torch.device, kv_len: int | None = None) -> torch.Tensor:
        """``[B, 1 or H, q_len, kv_len]``: True where an edge is cut, queries and keys aligned to the end.

        ``kv_len`` (default: every key) is shorter on a sliding-window layer of a cached step, whose
        cache holds only the last keys.
        """
        total = self.keys.shape[1]
        kv_len = total if kv_len is None else kv_len
        q = self.queries[:, total - q_len:].to(device)
        out = q[:, None, :, None] & self.keys[:, total - kv_len:].to(device)[:, None, None, :]
        if self.head_mask is not None:
            out = out & self.head_mask.to(device)[None, :, None, None]
        return out

    def _hook(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        q_len = hidden.shape[1]
        mask = kwargs.get("attention_mask")
        total = self.keys.shape[1]
        sliding = mask is not None and q_len < mask.shape[-1] < total  # a cached step's sliding-window layer
        if mask is not None and mask.shape[-1] != total and not sliding:
            raise EmolensError(f"attention mask covers {mask.shape[-1]} keys but the knockout was built for {total}",
                               "build the knockout from the batch that is being run")
        block = self.block(q_len, hidden.device, mask.shape[-1] if sliding else None)
        if not bool(block.any()):
            return None
        if mask is None:  # SDPA relying on is_causal: spell out the causal mask it stands for
            cols = torch.arange(total, device=hidden.device)
            rows = torch.arange(total - q_len, total, device=hidden.device)
            mask = (cols[None, :] <= rows[:, None])[None, None]
        if mask.dtype == torch.bool:
            new = mask & ~block
            allowed = new
        else:
            new = torch.where(block, torch.finfo(mask.dtype).min, mask)
            allowed = new > torch.finfo(mask.dtype).min / 2
        starved = block.any(-1) & ~allowed.any(-1)
        if bool(starved.any()):
            raise EmolensError("the knockout leaves some query with no key to attend to",
                               "keep at least one key visible (e.g. do not block the query's own position)")
        return args, {**kwargs, "attention_mask": new}


def knockout_condition(lm, keys: KeySpec, queries: KeySpec, window, head: int | None, fast: int):
    """One edge knockout as a :class:`~emolens.causal.common.Condition` (kind = the key spec)."""
    from emolens.causal.common import Condition, position_label

    heads = None if head is None else [head]

    def build(batch):
        return [], EdgeKnockout(lm, window.layers, positions_mask(batch, queries), positions_mask(batch, keys), heads)

    key_label = keys if isinstance(keys, str) else position_label(tuple(keys) if not isinstance(keys, int) else keys)
    query = queries if isinstance(queries, (str, int)) else tuple(queries)
    return Condition(f"keys={key_label}", "attn_edge", window, query, head, build, fast)


def knockout(lm, dataset, keys: Sequence[KeySpec] = ("context",), queries: KeySpec = -1, windows=(),
             heads: Sequence[int] | None = None, spec=None, batch_size: int = 16, fast: bool = True,
             progress: bool = True):
    """Block ``queries -> keys`` attention in each window (all heads, or each of ``heads`` alone).

    Metrics as for ablation: agreement with the clean prediction, accuracy, change in the gold
    log-probability. Negative int ``queries`` (``-1``: the answer cue) use the KV-prefix fast path:
    blocking edges from the last ``m`` queries changes nothing before them.
    """
    from emolens.causal.common import (
        CausalResult,
        Scorer,
        clean_pass,
        gold_index,
        make_batches,
        path_name,
        prediction_metrics,
        reader_for,
        run_conditions,
        suffix_len,
        to_frame,
    )
    from emolens.inputs.prompts import PromptSpec, build_prompts

    check_maskable(lm)
    if not windows:
        raise EmolensError("no layer windows given", "pass windows from layer_windows()")
    spec = spec or PromptSpec()
    prompts = build_prompts(dataset.texts, spec, lm.tokenizer)
    reader = reader_for(lm, prompts, spec)
    scorer = Scorer(lm, reader)
    batches = make_batches(lm, prompts, batch_size)
    query_ints = (queries,) if isinstance(queries, int) else (
        tuple(queries) if isinstance(queries, (list, tuple)) else ())
    path_fast = suffix_len(query_ints, fast)
    path = path_name(path_fast)
    clean = clean_pass(scorer, batches, len(prompts), paths=(path,), progress=progress)
    head_list: list[int | None] = list(heads) if heads is not None else [None]
    conditions = [knockout_condition(lm, k, queries, w, h, path_fast) for k in keys for w in windows
                  for h in head_list]
    scores = run_conditions(scorer, batches, len(prompts), conditions, progress, desc="knockout")
    gold = gold_index(dataset.labels, spec.labels)
    reference = clean.scores[path]
    rows = prediction_metrics("knockout", None, reference, reference, gold, lm.spec)
    for cond, s in zip(conditions, scores, strict=True):
        rows += prediction_metrics("knockout", cond, s, reference, gold, lm.spec)
    return CausalResult(to_frame(rows), reference, scores, conditions, list(dataset.ids),
                        info={"forwards": scorer.forwards, "n_items": len(prompts), "label_scoring": reader.describe()})
