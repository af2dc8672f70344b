"""The neuron pass: one forward per batch feeds the running statistics; nothing is stored per item.

Why: correlations need only sums (:mod:`emolens.neurons.moments`), so the ``neurons`` site of
every layer is captured at the answer cue, folded into the sums and dropped. Only the few layers
asked for in ``keep_layers`` (for sparse probes, which need per-item values) are kept in memory,
as float32 ``[n_items, N]``. Items without an emotion label or with a missing rating are left
out of the sums (reported as ``n_skipped``), so every statistic is over the same items.

A time budget (``budget_s``) bounds a run on a shared or slow machine without biasing it: items
go through in a seeded random order, in blocks (length-sorted inside a block), and the pass stops
before the first block that would end past the budget at the rate so far. The items done are
then a random subset of those planned, every statistic is over exactly them, and ``n_planned``
says how many were asked for -- a run is never silently shortened. A block is an eighth of the
items (at least ``block`` batches): length-sorting only reaches low padding in a large block --
on the 1,300-item crowd-enVENT sample, blocks of 4 batches of 16 padded prompts to 85.6 tokens
per item where a global sort gives 60.1, eighths give 64.9 -- while an eighth still bounds the
work a stop can waste.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from emolens.data.corpus import EmotionDataset
from emolens.engine.intervention import Capture, run_forward
from emolens.engine.shared_prefix import pad_id, prompts_prefix, run_suffix, suffix_batch
from emolens.errors import EmolensError, arg
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.neurons.moments import NeuronMoments

__all__ = ["NeuronPass", "complete_items", "neuron_pass"]


@dataclass
class NeuronPass:
    """What one pass produced: the sums, the items they cover, and the kept layers' activations."""

    moments: NeuronMoments
    layers: list[int]
    appraisals: tuple[str, ...]
    emotions: tuple[str, ...]
    items: np.ndarray  # dataset row indices that entered the sums
    n_skipped: int
    ratings: np.ndarray  # [len(items), A] float64, the ratings that entered the sums
    groups: np.ndarray  # [len(items)] emotion ids (indices into ``emotions``)
    kept: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> [len(items), N] float32
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # site -> [len(items), L, width] float32
    n_planned: int = 0  # complete items asked for; > len(items) when a time budget stopped the pass
    prefix_tokens: int = 0  # leading prompt tokens run once for all items (0: full forwards)

    @property
    def stopped_early(self) -> bool:
        return self.n_planned > len(self.items)


def complete_items(dataset: EmotionDataset, appraisals: Sequence[str], emotions: Sequence[str]) -> np.ndarray:
    """Rows with a label in ``emotions`` and every one of ``appraisals`` rated."""
    cols = [dataset.appraisal_names.index(a) for a in appraisals]
    rated = np.isfinite(dataset.appraisals[:, cols]).all(1) if cols else np.ones(len(dataset), bool)
    labelled = np.array([lab in emotions for lab in dataset.labels])
    return np.flatnonzero(rated & labelled)


def neuron_pass(lm, dataset: EmotionDataset, appraisals: Sequence[str] | None = None, spec=None,
                layers="all", position: int = -1, keep_layers: Sequence[int] = (), batch_size: int = 16,
                progress: bool = True, extra_sites: Sequence[str] = (), budget_s: float | None = None,
                block: int = 4, seed: int = 0, share_prefix: bool = True) -> NeuronPass:
    """Stream ``dataset`` through ``lm`` and accumulate neuron x appraisal sums at ``position``.

    ``extra_sites`` (e.g. ``("resid",)``) are captured in the same forward at every pass layer and
    kept in memory, so a cross-model comparison needs no second pass over the corpus.
    ``budget_s`` stops the pass before a block (an eighth of the items, at least ``block`` batches)
    that would end past it (see the module doc); ``seed`` fixes the block order.
    ``share_prefix`` runs the tokens every prompt starts with once (:mod:`emolens.engine.shared_prefix`)
    when ``position`` reads inside each item's own tokens; ``False`` forces full forwards.
    """
    spec = spec or PromptSpec()
    appraisals = tuple(appraisals or dataset.appraisal_names)
    unknown = [a for a in appraisals if a not in dataset.appraisal_names]
    if unknown:
        raise EmolensError(f"appraisal(s) {unknown} are not in dataset {dataset.name!r}",
                           f"use some of {list(dataset.appraisal_names)}")
    emotions = tuple(spec.labels)
    reg = lm.sites
    layer_list = reg.resolve_layers(layers, "neurons")
    keep = [k for k in keep_layers if k in layer_list]
    if len(keep) != len(set(keep_layers)):
        raise EmolensError(f"probe layers {sorted(set(keep_layers) - set(keep))} are not among the pass's layers",
                           f"pick probe layers inside {arg('layers')}")
    items = complete_items(dataset, appraisals, emotions)
    if len(items) < 10:
        raise EmolensError(f"only {len(items)} items of {dataset.name!r} have a label and every appraisal rated",
                           "use a dataset with appraisal ratings (e.g. crowd-envent or stimuli)")
    (width,) = reg.width("neurons")
    moments = NeuronMoments(len(layer_list), width, len(appraisals), len(emotions))
    cols = [dataset.appraisal_names.index(a) for a in appraisals]
    ratings = dataset.appraisals[np.ix_(items, cols)].astype(np.float64)
    groups = np.array([emotions.index(dataset.labels[i]) for i in items])
    kept = {k: np.zeros((len(items), width), np.float32) for k in keep}
    prompts = build_prompts([dataset.texts[i] for i in items], spec, lm.tokenizer)
    ops = [Capture(site, layers=layer_list, positions=[position], dtype=torch.float32, device="cpu")
           for site in ("neurons", *extra_sites)]
    extra = {site: np.zeros((len(items), len(layer_list), *reg.width(site)), np.float32) for site in extra_sites}
    # the shared tokens only where ``position`` reads inside each item's own tokens
    shared = (prompts_prefix(lm, prompts, keep=-position)
              if share_prefix and isinstance(position, int) and position < 0 else None)
    bar = tqdm(total=len(items), desc="neurons", unit="item", disable=not progress)
    order = np.random.default_rng(seed).permutation(len(items)) if budget_s is not None else np.arange(len(items))
    step = len(items) if budget_s is None else max(1, block * batch_size, -(-len(items) // 8))
    done = np.zeros(len(items), bool)
    start = time.perf_counter()
    used_prefix = False
    for b0 in range(0, len(items), step):
        chunk = order[b0:b0 + step]
        elapsed = time.perf_counter() - start
        if budget_s is not None and b0 and elapsed + elapsed / b0 * len(chunk) > budget_s:
            break  # this block would end past the budget at the rate so far
        for batch in iter_batches(lm.tokenizer, [prompts[i] for i in chunk], batch_size, lm.device):
            suffix = suffix_batch(batch, shared, pad_id(lm)) if shared is not None else None
            if suffix is not None:
                used_prefix = True
                _, run = run_suffix(lm, suffix, ops)
            else:
                _, run = run_forward(lm, batch, ops, need_logits=False)
            x = run.captures["neurons"][:, :, 0].numpy()  # [b, L, N]
            if not np.isfinite(x).all():
                raise EmolensError("non-finite neuron activations",
                                   f"load the model in float32 ({arg('dtype', 'float32')})")
            idx = chunk[batch.indices]
            moments.update(x, ratings[idx], groups[idx])
            for k in keep:
                kept[k][idx] = x[:, layer_list.index(k)]
            for site in extra_sites:
                extra[site][idx] = run.captures[site][:, :, 0].numpy()
            done[idx] = True
            bar.update(len(batch))
    bar.close()
    prefix_tokens = shared.length if shared is not None and used_prefix else 0
    if not done.all():  # a time budget stopped the pass: keep exactly the items that entered the sums
        sel = np.flatnonzero(done)
        return NeuronPass(moments, layer_list, appraisals, emotions, items[sel], len(dataset) - len(items),
                          ratings[sel], groups[sel], {k: v[sel] for k, v in kept.items()},
                          {k: v[sel] for k, v in extra.items()}, n_planned=len(items), prefix_tokens=prefix_tokens)
    return NeuronPass(moments, layer_list, appraisals, emotions, items, len(dataset) - len(items), ratings, groups,
                      kept, extra, n_planned=len(items), prefix_tokens=prefix_tokens)

