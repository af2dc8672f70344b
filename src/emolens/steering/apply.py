"""Applying a steering vector: where it goes, how long it is, and label scores under it.

``scale="unit"`` is β in raw units (the paper); ``scale="relative"`` multiplies β by the mean
residual norm at that layer over the steered positions, first-token sink excluded, so one β means
the same push across layers and models. Steering the answer cue only cannot change an earlier
position, so those conditions can share one key/value prefix per item batch and run just the cue
token (:func:`fast_label_scores`), which equals the full path (:func:`steered_label_scores`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from emolens.engine.intervention import Intervention, run_forward
from emolens.engine.ops import Add, Apply
from emolens.engine.positions import Positions
from emolens.engine.prefix import prefix_cache as _prefix_cache
from emolens.engine.prefix import suffix_inputs, tile_cache
from emolens.errors import EmolensError
from emolens.inputs.batching import Batch, iter_batches
from emolens.readout import LabelReader

SCALES: tuple[str, ...] = ("unit", "relative")
#: Where steering acts, by setting name: the answer cue; every prompt token but the first (the
#: attention sink, which steering would wreck rather than steer); or the answer cue and then every
#: generated token (``every_token`` during ``generate()``).
STEER_AT: dict[str, Positions] = {"last": Positions.of(-1), "prompt": Positions.of("prompt"),
                                  "generated": Positions.of(-1)}
POSITIONS: tuple[str, ...] = tuple(STEER_AT)


def steer_positions(name: str) -> Positions:
    """The :class:`Positions` of a steering position name (see :data:`STEER_AT`)."""
    if name not in STEER_AT:
        raise EmolensError(f"unknown steering position {name!r}: use one of {list(STEER_AT)}")
    return STEER_AT[name]


@torch.no_grad()
def mean_resid_norm(lm, prompts, layers: Sequence[int], position: str = "last", batch_size: int = 16
                    ) -> torch.Tensor:
    """Mean ‖resid‖ at each layer over the steered positions (``generated``: the prompt's), sink excluded.

    The reference for ``scale="relative"``: β = 1 adds a vector as long as a typical residual
    vector at that layer and position.
    """
    where = "prompt" if position == "generated" else position
    sums = torch.zeros(len(layers), dtype=torch.float64)
    count = 0
    for batch in iter_batches(lm.tokenizer, prompts, batch_size, lm.device):
        sel = steer_positions(where).mask(batch.attention_mask)
        norms: dict[int, torch.Tensor] = {}

        def record(x, layer, norms=norms):
            norms[layer] = x.detach().float().norm(dim=-1)
            return x

        ops = [Apply("resid", layers=[layer], positions="all", fn=lambda x, layer=layer: record(x, layer))
               for layer in layers]
        run_forward(lm, batch, ops, need_logits=False)
        for i, layer in enumerate(layers):
            sums[i] += float(norms[layer][sel.to(norms[layer].device)].double().sum())
        count += int(sel.sum())
    return (sums / max(count, 1)).float()


def scaled(unit: torch.Tensor, beta: float, scale: str = "unit", ref_norm: torch.Tensor | None = None
           ) -> torch.Tensor:
    """``β · u`` (``unit``) or ``β · ref_norm[layer] · u`` (``relative``) for unit vectors ``u[L, d]``."""
    if scale == "unit":
        return unit * float(beta)
    if scale == "relative":
        if ref_norm is None:
            raise EmolensError("relative scale needs the reference residual norms", "pass ref_norm")
        return unit * float(beta) * ref_norm.to(unit)[:, None]
    raise EmolensError(f"unknown scale {scale!r}", f"use one of {list(SCALES)}")


def steering_op(layers: Sequence[int], value: torch.Tensor, positions: torch.Tensor | str,
                every_token: bool = False) -> Add:
    """The one op steering needs: add ``value`` (``[L, d]`` or ``[B, L, d]``) to resid at ``layers``."""
    dims = "bl" if value.ndim == 3 else ("l" if value.ndim == 2 else None)
    return Add("resid", layers=list(layers), positions=positions, value=value, dims=dims,
               every_token=every_token)


@torch.no_grad()
def steered_label_scores(lm, reader: LabelReader, batch: Batch, layers: Sequence[int] | None = None,
                         value: torch.Tensor | None = None, pos_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Label log-probabilities ``[B, K]`` with ``value`` added at ``pos_mask`` (no steering when None).

    Multi-token labels are scored by teacher forcing with the same steering at the same prompt
    positions (the mask is padded with False over the label tokens).
    """
    model = lm.model
    inputs = batch.model_inputs()

    def forward(ids, mask, pos, keep, pmask):
        if value is None:
            return model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep)
        with Intervention(lm, [steering_op(layers, value, pmask)], batch_mask=mask):
            return model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep)

    out = forward(inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"], 1, pos_mask)
    logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    scores = logp[:, torch.tensor([t[0] for t in reader.token_ids], device=logp.device)]
    if reader.single_token:
        return scores
    n_rows = len(batch)
    for k, ids in enumerate(reader.token_ids):
        if len(ids) == 1:
            continue
        extra = torch.tensor(ids, device=batch.input_ids.device).expand(n_rows, -1)
        ids2 = torch.cat([inputs["input_ids"], extra], 1)
        mask2 = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], 1)
        pos2 = torch.cat([inputs["position_ids"], inputs["position_ids"][:, -1:]
                          + torch.arange(1, len(ids) + 1, device=extra.device)], 1)
        pmask2 = None if pos_mask is None else torch.cat([pos_mask, torch.zeros_like(extra, dtype=torch.bool)], 1)
        out2 = forward(ids2, mask2, pos2, len(ids) + 1, pmask2)
        lp = torch.log_softmax(out2.logits[:, :-1].float(), dim=-1)
        scores[:, k] = lp.gather(-1, extra.unsqueeze(-1)).squeeze(-1).sum(-1)
    return scores


def repeat_batch(batch: Batch, times: int) -> Batch:
    """The batch stacked ``times`` over (condition-major rows: row = c * B + i)."""
    return Batch(batch.input_ids.repeat(times, 1), batch.attention_mask.repeat(times, 1),
                 batch.position_ids.repeat(times, 1), {}, None)


def prefix_cache(lm, batch: Batch):
    """The clean key/value cache of every column but the last (``None`` where the fast path cannot run).

    Steering only the answer cue cannot change any earlier position of a causal model, so this
    cache is shared by every (direction, window, β) condition of a batch: each then runs the one
    cue token on a copy of it (:func:`fast_label_scores`). See :mod:`emolens.engine.prefix`.
    """
    return _prefix_cache(lm, batch, 1)  # None already where the cache cannot be copied safely


@torch.no_grad()
def fast_label_scores(lm, reader: LabelReader, batch: Batch, prefix, times: int = 1,
                      layers: Sequence[int] | None = None, value: torch.Tensor | None = None) -> torch.Tensor:
    """Label log-probabilities ``[times * B, K]`` of ``batch`` stacked ``times`` over (condition-major),
    steering the answer cue only, from the shared ``prefix`` cache of :func:`prefix_cache`.

    The same numbers as :func:`steered_label_scores` with positions ``last`` on the
    repeated batch (up to float rounding): one token per row runs instead of the whole prompt.
    ``value`` is ``[times * B, L, d]`` (or ``[L, d]``); multi-token labels continue each row's
    steered cache with the label's tokens, unsteered, as the full path does.
    """
    kwargs = suffix_inputs(batch, prefix, 1, times)
    ids, mask, pos, cache = kwargs["input_ids"], kwargs["attention_mask"], kwargs["position_ids"], kwargs["cache"]
    if value is None:
        out = lm.model(**kwargs, logits_to_keep=1)
    else:
        with Intervention(lm, [steering_op(layers, value, "generated")]):  # the one new token: the cue
            out = lm.model(**kwargs, logits_to_keep=1)
    logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    scores = logp[:, torch.tensor([t[0] for t in reader.token_ids], device=logp.device)]
    for k, toks in enumerate(reader.token_ids):
        if len(toks) == 1:
            continue
        extra = torch.tensor(toks[:-1], device=ids.device).expand(ids.shape[0], -1)
        out2 = lm.model(input_ids=extra, attention_mask=torch.cat([mask, torch.ones_like(extra)], 1),
                        position_ids=pos + torch.arange(1, len(toks), device=ids.device), cache=tile_cache(cache, 1),
                        use_cache=True)
        rest = torch.log_softmax(out2.logits.float(), dim=-1)
        target = torch.tensor(toks[1:], device=ids.device).expand(ids.shape[0], -1)
        scores[:, k] = scores[:, k] + rest.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1)
    return scores


