"""Activation patching ("emotion transfer", paper §6.3) over one fixed, seeded set of pairs.

Tak et al. redraw 200 (source, target) pairs for every layer and site, run each prompt alone and
cache every activation. We draw the pairs once (seeded, saved as ``pairs.parquet``) so every
site and window is measured on the same pairs; run each item clean once, capturing only the
patched positions of the sites at all layers; then patch targets in batches with a ``Set`` op
whose value holds one row per pair. Metrics: transfer (patched argmax = source's clean argmax),
remained (= target's), neither, and the normalised logit difference (0 = target clean, 1 =
source clean; a ratio of sums over pairs), each with a 95% interval from a bootstrap over target
items (pairs repeat items), over pairs whose clean predictions differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from emolens.causal.common import (
    CausalResult,
    Condition,
    Window,
    gold_index,
    int_positions,
    make_batches,
    position_label,
    reference_path,
    row,
    runner_for,
    suffix_len,
    to_frame,
)
from emolens.data.stimuli import load_stimulus_pairs
from emolens.engine.ops import Capture, Set
from emolens.engine.runner import path_name
from emolens.errors import EmolensError, arg
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.stats import cluster_bootstrap

PAIR_COLUMNS = ("pair", "source_id", "target_id", "source_label", "target_label")


def draw_pairs(ids: Sequence[str], labels: Sequence[str | None], n: int = 200, seed: int = 100) -> pd.DataFrame:
    """``n`` (source, target) pairs with different gold labels, drawn once with a seeded generator.

    As in the paper, the source is uniform and the target is redrawn until its label differs; the
    difference is that one draw serves every site and window.
    """
    keep = [i for i, lab in enumerate(labels) if lab is not None]
    if len(keep) < 2 or len({labels[i] for i in keep}) < 2:
        raise EmolensError(f"patching needs items of at least 2 different labels, got {len(keep)} labelled item(s)",
                           f"use more items ({arg('items', 'all')} or a larger {arg('limit')})")
    if n < 1:
        raise EmolensError(f"{arg('pairs', n)} is not positive", f"pass {arg('pairs', 1)} or more")
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        src = keep[rng.integers(len(keep))]
        tgt = keep[rng.integers(len(keep))]
        while labels[tgt] == labels[src]:
            tgt = keep[rng.integers(len(keep))]
        rows.append((p, ids[src], ids[tgt], labels[src], labels[tgt]))
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


def stimulus_pairs(available: Sequence[str] | None = None) -> pd.DataFrame:
    """The built-in minimal pairs (member a = source, b = target), optionally only those fully available."""
    frame = load_stimulus_pairs()
    out = pd.DataFrame({"pair": np.arange(len(frame)), "source_id": frame["source_id"],
                        "target_id": frame["target_id"], "source_label": frame["source_emotion"],
                        "target_label": frame["target_emotion"]})
    if available is not None:
        have = set(available)
        out = out[out["source_id"].isin(have) & out["target_id"].isin(have)].reset_index(drop=True)
        out["pair"] = np.arange(len(out))
    if out.empty:
        raise EmolensError("no stimulus pair has both members among the items",
                           f"use {arg('data', 'stimuli')} {arg('items', 'all')}")
    return out


def normalised_difference(patched: np.ndarray, src_clean: np.ndarray, tgt_clean: np.ndarray,
                          s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """ND = (d(patched) - d(target clean)) / (d(source clean) - d(target clean)), d = score_s - score_t."""
    rows = np.arange(len(s))

    def d(x):
        return x[rows, s] - x[rows, t]

    denom = d(src_clean) - d(tgt_clean)
    return np.divide(d(patched) - d(tgt_clean), denom, out=np.full(len(s), np.nan), where=denom != 0)


def patch_condition(site: str, window: Window, position: int, head: int | None, captures: dict,
                    key: str, src_rows: np.ndarray, fast: int) -> Condition:
    layers = list(window.layers)
    heads = None if head is None else [head]
    if head is not None and site != "heads":
        raise EmolensError(f"a head was given for site {site!r}", "patch single heads at site 'heads'")
    pool = captures[key]

    def build(batch):
        rows = torch.as_tensor(src_rows[batch.indices], device=pool.device)
        value = pool[rows][:, layers]  # [B, layers, 1, *w]
        return [Set(site, layers=layers, positions=[position], heads=heads, value=value, dims="blp")]

    return Condition("patch", site, window, position, head, build, fast)


def pair_metrics(cond: Condition | None, patched: np.ndarray, src_clean: np.ndarray, tgt_clean: np.ndarray,
                 model: str, clusters: np.ndarray | None = None, n_boot: int = 1000) -> list[dict]:
    """Transfer / remained / neither rates and the normalised logit difference over pairs.

    Pairs are drawn with replacement, so an item recurs across pairs: intervals come from a
    bootstrap that resamples whole clusters (``clusters``: the target item of each pair; every
    pair its own cluster when None). The normalised logit difference is a ratio of sums,
    ``Σ (d(patched) - d(target)) / Σ (d(source) - d(target))`` over pairs -- a mean of per-pair
    ratios is heavy-tailed where a pair's clean margin is small.
    """
    s, t = src_clean.argmax(1), tgt_clean.argmax(1)
    valid = s != t
    pred = patched.argmax(1)[valid]
    transfer, remained = pred == s[valid], pred == t[valid]
    cl = (np.arange(len(s)) if clusters is None else np.asarray(clusters))[valid]
    rows_ = np.arange(int(valid.sum()))

    def d(x):
        return x[valid][rows_, s[valid]] - x[valid][rows_, t[valid]]

    def stat(values, den=None):
        ci = cluster_bootstrap(values, cl, den, n_boot=n_boot)
        return ci.value, ci.low, ci.high, ci.n

    return [row("patching", cond, "transfer", stat(transfer.astype(float)), model),
            row("patching", cond, "remained", stat(remained.astype(float)), model),
            row("patching", cond, "neither", stat((~transfer & ~remained).astype(float)), model),
            row("patching", cond, "normalised_logit_diff", stat(d(patched) - d(tgt_clean), d(src_clean) - d(tgt_clean)),
                model)]


def patch(lm, dataset, pairs: int | pd.DataFrame = 200, sites: Sequence[str] = ("attn", "mlp", "resid"),
          windows: Sequence[Window] = (), positions: Sequence[int] = (-1,), heads: Sequence[int] | None = None,
          spec: PromptSpec | None = None, batch_size: int = 16, seed: int = 100, fast: bool = True,
          progress: bool = True) -> CausalResult:
    """Patch source activations into targets at every (site, window, position[, head]).

    ``pairs`` is a number (drawn by :func:`draw_pairs` from ``dataset``) or a frame with
    ``source_id``/``target_id`` columns (e.g. :func:`stimulus_pairs`). Positions must be ints:
    spans differ in length between prompts.
    """
    if not windows:
        raise EmolensError("no layer windows given", "pass windows from layer_windows()")
    for site in sites:
        lm.sites.width(site)
    for position in positions:
        if int_positions(position) is None or isinstance(position, tuple):
            raise EmolensError(f"cannot patch position {position!r}", "patch single integer positions like -1")
    if isinstance(pairs, int):
        pairs = draw_pairs(dataset.ids, dataset.labels, pairs, seed)
    pairs = pairs.reset_index(drop=True)
    item_ids = list(dict.fromkeys([*pairs["source_id"], *pairs["target_id"]]))
    items = dataset.subset(item_ids)
    spec = spec or PromptSpec()
    prompts = build_prompts(items.texts, spec, lm.tokenizer)
    runner = runner_for(lm, prompts, spec, fast)
    reader = runner.scorer
    where = {item_id: i for i, item_id in enumerate(item_ids)}
    src = pairs["source_id"].map(where).to_numpy()
    tgt = pairs["target_id"].map(where).to_numpy()
    full_positions = [p for p in positions if not suffix_len(p, fast)]
    caps: dict[str, list] = {}
    for site in sites:
        for position in positions:
            if suffix_len(position, fast):  # each negative position has its own suffix length and path
                caps.setdefault(path_name(suffix_len(position, fast)), []).append(
                    Capture(site, layers="all", positions=[position], name=site))
        if full_positions:
            caps.setdefault("full", []).append(Capture(site, layers="all", positions=list(full_positions), name=site))
    paths = sorted({path_name(suffix_len(p, fast)) for p in positions})
    clean = runner.clean(make_batches(lm, prompts, batch_size), len(prompts), paths, caps, progress)
    head_list: list[int | None] = list(heads) if heads is not None else [None]
    conditions = []
    for site in sites:
        for window in windows:
            for position in positions:
                m = suffix_len(position, fast)
                site_caps = clean.captures[path_name(m)]
                if not m:  # keep the one position this condition patches
                    j = full_positions.index(position)
                    site_caps = {site: site_caps[site][:, :, j:j + 1]}
                for head in head_list if site == "heads" else [None]:
                    conditions.append(patch_condition(site, window, position, head, site_caps, site, src, m))
    target_batches = make_batches(lm, [prompts[i] for i in tgt], batch_size)
    scores = runner.conditions(target_batches, len(pairs), conditions, progress, desc="patch")
    model = lm.spec
    rows = []
    for cond, s in zip(conditions, scores, strict=True):
        clean_scores = clean.scores[path_name(cond.suffix)]
        rows += pair_metrics(cond, s, clean_scores[src], clean_scores[tgt], model, clusters=tgt)
    reference = clean.scores[reference_path(paths)]
    gold = gold_index(items.labels, spec.labels)
    pairs = pairs.assign(source_clean_pred=[spec.labels[k] for k in reference[src].argmax(1)],
                         target_clean_pred=[spec.labels[k] for k in reference[tgt].argmax(1)],
                         source_gold_correct=(reference[src].argmax(1) == gold[src]),
                         target_gold_correct=(reference[tgt].argmax(1) == gold[tgt]))
    return CausalResult(to_frame(rows), reference, scores, conditions, item_ids, pairs=pairs,
                        info={"forwards": runner.forwards, "token_layers": runner.counter.token_layers,
                              "n_items": len(item_ids), "n_pairs": len(pairs),
                              "positions": [position_label(p) for p in positions],
                              "label_scoring": reader.describe()})
