"""Shared machinery of the causal analyses: layer windows, batched scoring under ops, tidy metrics.

Ablation (:mod:`emolens.causal.ablation`), patching (:mod:`emolens.causal.patching`) and edge
knockout (:mod:`emolens.causal.knockout`) all do the same thing: score the 13 labels once clean, then once
per *condition* (site x layer window x position x kind), batched over items. This module owns that
loop so the three analyses only say how a condition edits a batch.

**The KV-prefix fast path** (:mod:`emolens.engine.prefix`). An edit confined to the last ``m`` positions
(``-1 .. -m``, the answer cue and the tokens before it) cannot change anything at earlier positions
of a causal model, so the clean key/value cache of the first ``T-m`` tokens is shared by every
condition at those positions. We compute that prefix once per batch and ``m`` and run each
condition as an ``m``-token step on a copy of it, with positions resolved inside the suffix
(``Intervention(..., suffix=True)``). Clean scores and captures used by conditions come from the
same path, so an edit that writes back the clean value is bit-identical to the clean run. Other
positions (non-negative ints, spans, ``"all"``) run full forwards, as does a batch with a row too
short for the suffix or a model whose cache cannot be copied.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from emolens.engine.intervention import Intervention
from emolens.engine.ops import Op
from emolens.engine.prefix import bytes_per_row, extend_prefix, prefix_cache, suffix_inputs, suffix_mask, tile_cache
from emolens.engine.windows import Window
from emolens.errors import EmolensError
from emolens.inputs.batching import Batch, iter_batches
from emolens.metrics import wilson_interval
from emolens.readout import LabelReader

COLUMNS = ("analysis", "kind", "site", "window_center", "window_span", "layers", "position", "head", "metric",
           "value", "ci_low", "ci_high", "n", "model")
Position = int | str | tuple[int, ...]


# ----------------------------------------------------------------------------------- windows


def position_label(position: Position) -> str:
    if isinstance(position, tuple):
        return "|".join(map(str, position))
    return str(position)


def suffix_len(position: Position, fast: bool = True) -> int:
    """How many last tokens a condition at this position must run (0: it needs full forwards).

    Negative ints (and tuples of them) touch only the last ``m = -min(position)`` tokens;
    ``fast=False`` (the fast path switched off) is always 0.
    """
    ints = position if isinstance(position, tuple) else (position,)
    if fast and ints and all(isinstance(p, int) and not isinstance(p, bool) and p < 0 for p in ints):
        return -min(ints)
    return 0


def path_name(m: int) -> str:
    """The clean-run key of a path: ``"full"``, ``"fast"`` (the last token) or ``"fast<m>"``."""
    m = int(m)
    return "full" if m == 0 else ("fast" if m == 1 else f"fast{m}")


def path_suffix(name: str) -> int:
    return 0 if name == "full" else (1 if name == "fast" else int(name[4:]))


def reference_path(paths) -> str:
    """The path of the clean reference row: the shortest suffix, else full forwards."""
    return min(paths, key=lambda p: (path_suffix(p) == 0, path_suffix(p)))


def int_positions(position: Position) -> list[int] | None:
    if isinstance(position, int) and not isinstance(position, bool):
        return [position]
    if isinstance(position, tuple) and all(isinstance(p, int) for p in position):
        return list(position)
    return None


# ----------------------------------------------------------------------------------- scoring


@dataclass
class Prefix:
    """A batch's clean key/value cache of every column but the last ``m``."""

    cache: object
    m: int = 1


class Scorer:
    """Label log-probabilities of batches under ops and knockouts, full or on a cached prefix.

    Prefix caches are kept per batch (by its tokens) and suffix length while they fit in
    ``prefix_bytes``, so the clean pass and the conditions share them; a batch's prefixes for
    several suffix lengths are built from the longest one (:func:`~emolens.engine.prefix.extend_prefix`).
    """

    def __init__(self, lm, reader: LabelReader, prefix_bytes: int = 2 ** 30):
        self.lm = lm
        self.reader = reader
        self.forwards = 0
        self.prefix_bytes = prefix_bytes
        self._memo: dict[tuple, Prefix | None] = {}
        self._held = 0

    @torch.no_grad()
    def prefixes(self, batch: Batch, lengths) -> dict[int, Prefix | None]:
        """Clean caches of every column but the last ``m``, per ``m`` (``None``: that ``m`` runs full forwards)."""
        key = (tuple(batch.input_ids.shape), *(t.cpu().numpy().tobytes() for t in (
            batch.input_ids, batch.attention_mask, batch.position_ids)))
        out: dict[int, Prefix | None] = {}
        longer: Prefix | None = None
        for m in sorted({int(x) for x in lengths}, reverse=True):
            if (key, m) not in self._memo:
                if longer is None:
                    cache = prefix_cache(self.lm, batch, m)
                else:
                    cache = extend_prefix(self.lm, batch, longer.cache, longer.m, m)
                self.forwards += cache is not None
                got = None if cache is None else Prefix(cache, m)
                size = 0 if cache is None else len(batch) * bytes_per_row(cache)
                if self._held + size <= self.prefix_bytes:
                    self._memo[(key, m)] = got
                    self._held += size
            else:
                got = self._memo[(key, m)]
            out[m] = got
            longer = got or longer
        return out

    def prefix(self, batch: Batch, m: int = 1) -> Prefix | None:
        """Clean cache of every column but the last ``m`` (``None``: this batch runs full forwards)."""
        return self.prefixes(batch, [m])[int(m)]

    @torch.no_grad()
    def run(self, batch: Batch, ops: Sequence[Op] = (), knock=None, prefix=None
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``([B, K] label log-probs on CPU, captures)``; ``prefix`` selects the fast path."""
        from contextlib import nullcontext

        from transformers import DynamicCache

        multi = not self.reader.single_token
        if prefix is not None:
            kwargs = suffix_inputs(batch, prefix.cache, prefix.m)
            run = Intervention(self.lm, list(ops), batch_mask=suffix_mask(batch, prefix.m), spans=batch.span_masks,
                               suffix=True)
        else:
            cache = DynamicCache(config=self.lm.model.config) if multi else None
            kwargs = {"input_ids": batch.input_ids, "position_ids": batch.position_ids,
                      "attention_mask": batch.attention_mask, "cache": cache, "use_cache": cache is not None}
            run = Intervention(self.lm, list(ops), batch_mask=batch.attention_mask, spans=batch.span_masks)
        with run, knock if knock is not None else nullcontext():
            out = self.lm.model(**kwargs, logits_to_keep=1)
        self.forwards += 1
        scores = self._scores(batch, out.logits[:, -1], kwargs["cache"])
        return scores.float().cpu(), run.captures

    def _scores(self, batch: Batch, last: torch.Tensor, cache) -> torch.Tensor:
        def fork(c):
            twin = tile_cache(c, 1)
            return twin if twin is not None else copy.deepcopy(c)

        logp = torch.log_softmax(last.float(), dim=-1)
        ids = self.reader.token_ids
        scores = logp[:, [t[0] for t in ids]].clone()
        for k, toks in enumerate(ids):
            if len(toks) == 1:
                continue
            # continue the (possibly edited) prompt's cache with the label's tokens, outside every hook
            extra = torch.tensor(toks[:-1], device=last.device).expand(len(batch), -1)
            mask = torch.cat([batch.attention_mask, torch.ones_like(extra)], 1)
            pos = batch.position_ids[:, -1:] + torch.arange(1, len(toks), device=last.device)
            out = self.lm.model(input_ids=extra, attention_mask=mask, position_ids=pos, cache=fork(cache),
                                use_cache=True)
            self.forwards += 1
            rest = torch.log_softmax(out.logits.float(), -1)
            target = torch.tensor(toks[1:], device=last.device).expand(len(batch), -1)
            scores[:, k] += rest.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1)
        return scores


def make_batches(lm, prompts, batch_size: int) -> list[Batch]:
    """Length-sorted, pre-encoded batches reused by every condition (``indices`` = prompt positions)."""
    return list(iter_batches(lm.tokenizer, prompts, batch_size, lm.device))


@dataclass
class Condition:
    """One measured edit: its labels for the table and how it edits a batch.

    ``build(batch)`` returns the ops and an optional knockout context for that batch. ``fast`` is
    the suffix length ``m`` of the KV-prefix fast path (0 or False: full forwards; True: 1).
    """

    kind: str
    site: str
    window: Window | None
    position: Position
    head: int | None
    build: Callable[[Batch], tuple[list[Op], object]]
    fast: int = 0


@dataclass
class CleanRun:
    """Clean label scores and captures of items, per path (``"fast"``/``"full"``)."""

    scores: dict[str, np.ndarray]
    captures: dict[str, dict[str, torch.Tensor]]


def _store(dest: dict, name: str, value: torch.Tensor, index: np.ndarray, n: int) -> None:
    if name not in dest:
        dest[name] = torch.zeros((n, *value.shape[1:]), dtype=value.dtype, device=value.device)
    dest[name][torch.as_tensor(index, device=value.device)] = value


def clean_pass(scorer: Scorer, batches: Sequence[Batch], n: int, fast: Sequence[Op] = (), full: Sequence[Op] = (),
               paths: Sequence[str] = ("fast",), progress: bool = False,
               ops: dict[str, Sequence[Op]] | None = None) -> CleanRun:
    """One clean run per item and path, capturing what the conditions will need.

    ``paths`` are :func:`path_name` keys; ``ops`` maps a path to its captures (default: ``full``
    for ``"full"``, ``fast`` for the others).
    """
    scores = {p: np.zeros((n, len(scorer.reader.labels)), np.float32) for p in paths}
    caps: dict[str, dict[str, torch.Tensor]] = {p: {} for p in paths}
    lengths = [path_suffix(p) for p in paths if path_suffix(p)]
    for batch in tqdm(batches, desc="clean", unit="batch", disable=not progress, leave=False):
        prefixes = scorer.prefixes(batch, lengths)
        for path in paths:
            m = path_suffix(path)
            path_ops = ops[path] if ops is not None and path in ops else (full if m == 0 else fast)
            prefix = prefixes[m] if m else None
            s, got = scorer.run(batch, path_ops, prefix=prefix)
            scores[path][batch.indices] = s.numpy()
            for name, value in got.items():
                _store(caps[path], name, value, batch.indices, n)
    return CleanRun(scores, caps)


def run_conditions(scorer: Scorer, batches: Sequence[Batch], n: int, conditions: Sequence[Condition],
                   progress: bool = False, desc: str = "conditions") -> list[np.ndarray]:
    """Label scores ``[n, K]`` of every condition; each batch's prefix (per suffix length) is computed once."""
    out = [np.zeros((n, len(scorer.reader.labels)), np.float32) for _ in conditions]
    bar = tqdm(total=len(batches) * len(conditions), desc=desc, unit="fwd", disable=not progress, leave=False)
    lengths = sorted({int(c.fast) for c in conditions if c.fast})
    for batch in batches:
        prefixes = scorer.prefixes(batch, lengths)
        for i, cond in enumerate(conditions):
            ops, knock = cond.build(batch)
            s, _ = scorer.run(batch, ops, knock, prefixes[int(cond.fast)] if cond.fast else None)
            out[i][batch.indices] = s.numpy()
            bar.update(1)
    bar.close()
    return out


# ----------------------------------------------------------------------------------- metrics


def proportion(hits: np.ndarray) -> tuple[float, float, float, int]:
    """Mean of a boolean array with its 95% Wilson interval."""
    hits = np.asarray(hits, bool)
    n = int(hits.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    low, high = wilson_interval(int(hits.sum()), n)
    return float(hits.mean()), low, high, n


def mean_ci(values: np.ndarray) -> tuple[float, float, float, int]:
    """Mean with a 95% t interval (a mean change is near-normal at the n we run)."""
    from scipy import stats

    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    n = int(values.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(values.mean())
    if n == 1:
        return mean, float("nan"), float("nan"), 1
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half, n


def row(analysis: str, cond: Condition | None, metric: str, stat: tuple, model: str) -> dict:
    """One tidy row; a ``None`` condition is the clean reference."""
    window = cond.window if cond is not None else None
    return {"analysis": analysis, "kind": cond.kind if cond else "clean", "site": cond.site if cond else "none",
            "window_center": window.center if window else -1, "window_span": window.span if window else 0,
            "layers": window.label if window else "", "position": position_label(cond.position) if cond else "",
            "head": cond.head if cond is not None else None, "metric": metric, "value": stat[0],
            "ci_low": stat[1], "ci_high": stat[2], "n": stat[3], "model": model}


def to_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["head"] = frame["head"].astype("Int64")
    frame["n"] = frame["n"].astype("int64")
    return frame


def prediction_metrics(analysis: str, cond: Condition | None, scores: np.ndarray, clean: np.ndarray,
                       gold: np.ndarray, model: str) -> list[dict]:
    """Agreement with the clean prediction, accuracy, and the mean change in the gold log-prob."""
    pred, clean_pred = scores.argmax(1), clean.argmax(1)
    has = gold >= 0
    rows_ = [row(analysis, cond, "agreement", proportion(pred == clean_pred), model),
             row(analysis, cond, "accuracy", proportion(pred[has] == gold[has]), model)]
    delta = scores[has, gold[has]] - clean[has, gold[has]]
    rows_.append(row(analysis, cond, "delta_logp_gold", mean_ci(delta), model))
    return rows_


@dataclass
class CausalResult:
    """A tidy table (one row per measurement), per-condition label scores, and run facts."""

    frame: pd.DataFrame
    clean_scores: np.ndarray
    scores: list[np.ndarray]
    conditions: list[Condition]
    ids: list[str]
    info: dict = dataclasses.field(default_factory=dict)
    pairs: pd.DataFrame | None = None


def gold_index(labels: Sequence[str | None], names: Sequence[str]) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(names)}
    return np.array([index.get(lab, -1) if lab is not None else -1 for lab in labels], dtype=np.int64)


def reader_for(lm, prompts, spec) -> LabelReader:
    if not prompts:
        raise EmolensError("no items to analyse", "check --items / --limit")
    return LabelReader.build(lm.tokenizer, spec.labels, prompts[0].text, prompts[0].label_prefix)
