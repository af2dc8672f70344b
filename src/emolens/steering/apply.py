"""Applying a steering vector: where it goes (:data:`STEER_AT`), how long it is, and the op that adds it.

``scale="unit"`` is β in raw units (the paper); ``scale="relative"`` multiplies β by the mean
residual norm at that layer over the steered positions, first-token sink excluded, so one β means
the same push across layers and models. Label scores under steering come from the engine's
:class:`~emolens.engine.runner.ConditionRunner`, which runs answer-cue steering on a shared
key/value prefix (the cue token only) and other positions as full forwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from emolens.engine.intervention import run_forward
from emolens.engine.ops import Add, Apply
from emolens.engine.positions import Positions
from emolens.errors import EmolensError
from emolens.inputs.batching import iter_batches

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

        def record(x, ctx, norms=norms):
            norms[ctx.layer] = x.detach().float().norm(dim=-1)
            return x

        run_forward(lm, batch, [Apply("resid", layers=list(layers), positions="all", fn=record)], need_logits=False)
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


def steering_op(layers: Sequence[int], value: torch.Tensor, positions: Positions | torch.Tensor | str | int,
                every_token: bool = False) -> Add:
    """The one op steering needs: add ``value`` (``[L, d]`` or ``[B, L, d]``) to resid at ``layers``."""
    dims = "bl" if value.ndim == 3 else ("l" if value.ndim == 2 else None)
    return Add("resid", layers=list(layers), positions=positions, value=value, dims=dims,
               every_token=every_token)
