"""Ablation of a site over a layer window: zero, mean, norm-matched random, resample (paper §6.1-6.2).

Tak et al. zero or randomise the activation at the answer cue in a window of layers and report
how often the prediction survives. We add the two ablations that control for "off-distribution"
damage -- the mean activation over a reference set, and an activation resampled from another
item (a seeded derangement) -- and report, per condition, agreement with the clean prediction,
accuracy against gold, and the mean change of the gold label's log-probability, each with a CI.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch

from emolens.causal.common import (
    CausalResult,
    Condition,
    Position,
    Window,
    gold_index,
    int_positions,
    make_batches,
    position_label,
    prediction_metrics,
    reference_path,
    runner_for,
    suffix_len,
    to_frame,
)
from emolens.engine.ops import Apply, Capture, Resample, Set, Zero
from emolens.engine.runner import path_name
from emolens.errors import EmolensError
from emolens.inputs.prompts import PromptSpec, build_prompts

KINDS = ("zero", "mean", "random", "resample")


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation with no fixed point: item i takes item perm[i]'s activation."""
    if n < 2:
        raise EmolensError("resample ablation needs at least 2 items", "use more items")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    for i in np.flatnonzero(perm == np.arange(n)):
        j = (i + 1) % n
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def _seed(*parts) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def norm_matched_noise(x: torch.Tensor, rows: np.ndarray, key: str) -> torch.Tensor:
    """Gaussian noise shaped like ``x`` ``[B, P, *w]``, rescaled to ``x``'s L2 norm per row and position.

    Each row draws from its own generator, seeded by the item and the condition, so the draw does
    not depend on how items were batched (or stacked with other conditions). The generators live
    on ``x``'s device, so the noise is made there, with no host round trip: on the CPU the numbers
    are the ones earlier versions drew; on a GPU they are the device generator's stream (same seeds,
    different numbers, equally valid).
    """
    noise = torch.stack([torch.randn(x.shape[1:], device=x.device, dtype=torch.float32,
                                     generator=torch.Generator(device=x.device).manual_seed(_seed(key, int(r))))
                         for r in rows])
    dims = tuple(range(2, x.ndim))
    scale = x.float().norm(dim=dims, keepdim=True) / noise.norm(dim=dims, keepdim=True).clamp_min(1e-12)
    return (noise * scale).to(x.dtype)


def _heads_arg(site: str, head: int | None):
    if head is not None and site != "heads":
        raise EmolensError(f"a head was given for site {site!r}", "ablate single heads at site 'heads'")
    return None if head is None else [head]


def ablation_condition(kind: str, site: str, window: Window, position: Position, head: int | None,
                       clean, pool_key: str, perm: np.ndarray | None, seed: int, fast: int) -> Condition:
    """How one ablation edits a batch (values come from the clean run of the same path).

    ``fast`` is the suffix length of the KV-prefix path (0: full forwards;
    see :func:`~emolens.causal.common.path_name`).
    """
    layers = list(window.layers)
    heads = _heads_arg(site, head)
    ints = int_positions(position)
    pos = ints if ints is not None else position
    caps = clean.captures[path_name(fast)]

    def build(batch):
        if kind == "zero":
            return [Zero(site, layers=layers, positions=pos, heads=heads)]
        if kind == "mean":
            mean = caps[pool_key].float().mean(0)[layers].to(caps[pool_key].dtype)  # [layers, P, *w]
            return [Set(site, layers=layers, positions=pos, heads=heads, value=mean, dims="lp")]
        if kind == "resample":
            source = caps[pool_key][:, layers]
            return [Resample(site, layers=layers, positions=pos, heads=heads, source=source,
                             index=torch.as_tensor(perm[batch.indices]))]
        where = f"{window.center}|{window.span}|{position_label(position)}|{head}"

        def noise(x, ctx, rows=batch.indices):  # one draw per (item, layer): the op context names the layer
            return norm_matched_noise(x, rows, f"{seed}|{site}|{ctx.layer}|{where}")

        return [Apply(site, layers=layers, positions=pos, heads=heads, fn=noise)]

    return Condition(kind, site, window, position, head, build, fast)


def ablate(lm, dataset, sites: Sequence[str] = ("attn", "mlp", "resid"), windows: Sequence[Window] = (),
           positions: Sequence[Position] = (-1,), kinds: Sequence[str] = ("zero", "random"),
           heads: Sequence[int] | None = None, spec: PromptSpec | None = None, batch_size: int = 16,
           seed: int = 100, fast: bool = True, progress: bool = True) -> CausalResult:
    """Ablate every (site, window, position, kind[, head]) and measure the readout on ``dataset``.

    ``heads`` ablates single heads (each its own condition) at site ``heads``. Mean and resample
    values come from the clean runs of the same items (mean over items; resample from a seeded
    derangement). ``fast`` uses the KV-prefix path for negative positions (the last ``m`` tokens).
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise EmolensError(f"unknown ablation kind(s) {unknown}", f"use some of {list(KINDS)}")
    if not windows:
        raise EmolensError("no layer windows given", "pass windows from layer_windows()")
    for site in sites:
        lm.sites.width(site)
    spec = spec or PromptSpec()
    prompts = build_prompts(dataset.texts, spec, lm.tokenizer)
    runner = runner_for(lm, prompts, spec, fast)
    reader = runner.scorer
    batches = make_batches(lm, prompts, batch_size)
    n = len(prompts)
    needs_pool = any(k in ("mean", "resample") for k in kinds)
    caps: dict[str, list] = {}
    pool_keys = {}

    for site in sites:
        for position in positions:
            ints = int_positions(position)
            if ints is None and "resample" in kinds:
                raise EmolensError(f"resample ablation at span {position!r} is undefined (spans differ in length)",
                                   "resample at integer positions only")
            key = f"{site}@{position_label(position)}"
            pool_keys[(site, position)] = key
            if needs_pool:
                cap = Capture(site, layers="all", positions=ints if ints is not None else position,
                              pool=None if ints is not None else "mean", name=key)
                caps.setdefault(path_name(suffix_len(position, fast)), []).append(cap)
    paths = sorted({path_name(suffix_len(p, fast)) for p in positions})
    clean = runner.clean(batches, n, paths, caps, progress)
    perm = derangement(n, seed) if "resample" in kinds else None
    head_list: list[int | None] = list(heads) if heads is not None else [None]
    conditions = []
    for site in sites:
        for window in windows:
            for position in positions:
                for kind in kinds:
                    for head in head_list if site == "heads" else [None]:
                        conditions.append(ablation_condition(kind, site, window, position, head, clean,
                                                             pool_keys[(site, position)], perm, seed,
                                                             suffix_len(position, fast)))
    scores = runner.conditions(batches, n, conditions, progress, desc="ablate")
    gold = gold_index(dataset.labels, spec.labels)
    model = lm.spec
    reference = clean.scores[reference_path(paths)]
    rows = prediction_metrics("ablation", None, reference, reference, gold, model)
    for cond, s in zip(conditions, scores, strict=True):
        rows += prediction_metrics("ablation", cond, s, clean.scores[path_name(cond.suffix)], gold, model)
    return CausalResult(to_frame(rows), reference, scores, conditions, list(dataset.ids),
                        info={"forwards": runner.forwards, "token_layers": runner.counter.token_layers,
                              "n_items": n, "label_scoring": reader.describe()})
