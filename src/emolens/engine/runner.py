"""The condition runner: score the labels of item batches under conditions, on a shared KV prefix where it can.

Ablation, patching, knockout and steering all ask the same question: what does the model answer
when a batch of prompts runs under some ops? A *condition* is data -- how to build its op list
for a batch (:class:`Condition`), and how many last tokens its edits are confined to (``suffix``).
:class:`ConditionRunner` owns the one loop that answers it:

* **Path choice.** An edit confined to the last ``m`` positions (``-1 .. -m``) cannot change any
  earlier position of a causal model, so the clean key/value cache of the first ``T - m`` columns
  is shared by every such condition: the runner computes that prefix once per batch and ``m``
  (:mod:`emolens.engine.prefix`) and runs each condition as an ``m``-token step on a copy of it,
  with positions resolved inside the suffix. Other conditions, a batch with a row too short for
  the suffix, and a model whose cache cannot be copied run full forwards.
* **Prefix memo.** Prefixes are kept per batch (by its tokens) and ``m`` while they fit in
  ``prefix_bytes``, so the clean pass and every condition share them; a batch's prefix for a
  shorter suffix is built from its longer one.
* **Stacking.** :meth:`ConditionRunner.run` can repeat a batch ``times`` over (rows
  condition-major, ``row = c * B + i``) so several conditions share one forward when one op
  holds all their values (steering's stacked vectors).
* **Scoring** goes through the one :class:`~emolens.engine.scoring.LabelScorer`; multi-token
  labels continue each forward's own (edited) cache.
* **Accounting.** :class:`Counter` counts forwards and token-layers (tokens run x decoder
  layers), so a fast path's saving is measured, not assumed.

The runner takes a loaded model or a plain ``nn.Module`` (sites resolved by structure).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from emolens.engine.intervention import Intervention, unwrap
from emolens.engine.ops import Op
from emolens.engine.prefix import bytes_per_row, extend_prefix, prefix_cache, suffix_inputs, suffix_mask
from emolens.engine.scoring import LabelScorer
from emolens.inputs.batching import Batch


@dataclass
class Counter:
    """Forwards run and token-layers computed (tokens x decoder layers), for cost accounting."""

    forwards: int = 0
    token_layers: int = 0

    def add(self, tokens: int, layers: int, forwards: int = 1) -> None:
        self.forwards += forwards
        self.token_layers += int(tokens) * int(layers)


@dataclass
class Prefix:
    """A batch's clean key/value cache of every column but the last ``m``."""

    cache: object
    m: int = 1


@dataclass
class Condition:
    """One measured setting as data: the ops it runs on a batch, and its suffix length.

    ``build(batch)`` returns the op list for that batch (values may depend on which items it
    holds, e.g. a patch source per row). ``suffix`` is the number of last tokens the edits are
    confined to (0: full forwards; see :attr:`~emolens.engine.positions.Positions.suffix`).
    """

    build: Callable[[Batch], Sequence[Op]]
    suffix: int = 0


@dataclass
class CleanRun:
    """Clean label scores and captures of items, per path (``"full"``, ``"fast"``, ``"fast<m>"``)."""

    scores: dict[str, np.ndarray]
    captures: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def path_name(m: int) -> str:
    """The clean-run key of a path: ``"full"``, ``"fast"`` (the last token) or ``"fast<m>"``."""
    m = int(m)
    return "full" if m == 0 else ("fast" if m == 1 else f"fast{m}")


def path_suffix(name: str) -> int:
    return 0 if name == "full" else (1 if name == "fast" else int(name[4:]))


def repeat_batch(batch: Batch, times: int) -> Batch:
    """The batch stacked ``times`` over (condition-major rows: ``row = c * B + i``)."""
    if times == 1:
        return batch
    return Batch(batch.input_ids.repeat(times, 1), batch.attention_mask.repeat(times, 1),
                 batch.position_ids.repeat(times, 1), {k: v.repeat(times, 1) for k, v in batch.span_masks.items()},
                 None)


class ConditionRunner:
    """Label log-probabilities of batches under op lists, full or on a cached prefix (see the module doc)."""

    def __init__(self, lm, scorer: LabelScorer, prefix_bytes: int = 2 ** 30, counter: Counter | None = None):
        self.lm = lm
        self.model, self.sites = unwrap(lm)
        self.scorer = scorer
        self.prefix_bytes = prefix_bytes
        self.counter = counter or Counter()
        self._memo: dict[tuple, Prefix | None] = {}
        self._held = 0

    @property
    def forwards(self) -> int:
        return self.counter.forwards

    # -- prefixes ------------------------------------------------------------------------------

    @torch.no_grad()
    def prefixes(self, batch: Batch, lengths) -> dict[int, Prefix | None]:
        """Clean caches of every column but the last ``m``, per ``m`` (``None``: that ``m`` runs full forwards)."""
        key = (tuple(batch.input_ids.shape), *(t.cpu().numpy().tobytes() for t in (
            batch.input_ids, batch.attention_mask, batch.position_ids)))
        out: dict[int, Prefix | None] = {}
        longer: Prefix | None = None
        n_layers = self.sites.n_layers
        for m in sorted({int(x) for x in lengths if int(x)}, reverse=True):
            if (key, m) not in self._memo:
                T = batch.input_ids.shape[1]
                if longer is None:
                    cache = prefix_cache(self.model, batch, m)
                    ran = T - m
                else:
                    cache = extend_prefix(self.model, batch, longer.cache, longer.m, m)
                    ran = longer.m - m
                if cache is not None:
                    self.counter.add(len(batch) * ran, n_layers)
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

    # -- one forward ---------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, batch: Batch, ops: Sequence[Op] = (), prefix: Prefix | None = None, times: int = 1
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``([times * B, K] label log-probs on CPU, captures)`` of ``batch`` stacked ``times`` over under ``ops``.

        ``prefix`` selects the suffix path (the ops' positions must lie in its last ``m`` tokens);
        ``None`` runs the whole prompt.
        """
        rows = repeat_batch(batch, times)
        if prefix is not None:
            kwargs = suffix_inputs(batch, prefix.cache, prefix.m, times)
            run = Intervention(self.lm, list(ops), batch_mask=suffix_mask(batch, prefix.m, times),
                               spans=rows.span_masks, suffix=True)
            tokens = len(rows) * prefix.m
        else:
            cache = self.scorer.new_cache(self.model)
            kwargs = {**rows.model_inputs(), "cache": cache, "use_cache": cache is not None}
            run = Intervention(self.lm, list(ops), batch_mask=rows.attention_mask, spans=rows.span_masks)
            tokens = int(rows.input_ids.numel())
        with run:
            out = self.model(**kwargs, logits_to_keep=1)
        self.counter.add(tokens, self.sites.n_layers)
        scores = self.scorer.score(self.model, rows, out.logits[:, -1], kwargs["cache"])
        extra = self.scorer.extra_forwards
        self.counter.add(len(rows) * sum(len(t) - 1 for t in self.scorer.token_ids if len(t) > 1),
                         self.sites.n_layers, forwards=extra)
        return scores.float().cpu(), run.captures

    @torch.no_grad()
    def stack(self, batch: Batch, values: torch.Tensor, op_for: Callable[[torch.Tensor], Op],
              prefix: Prefix | None = None, rows: int = 64, cache_bytes: int = 2 ** 31,
              on_rows: Callable[[int], None] | None = None) -> torch.Tensor:
        """Label scores ``[C, B, K]`` of ``C`` conditions that differ only in one op's value, ``values[c]``.

        Each forward stacks the batch once per condition (up to ``rows`` rows; on a ``prefix``, also
        no more than ``cache_bytes`` of tiled cache), and ``op_for(v)`` builds the op for a chunk
        whose value ``v`` is ``[chunk * B, ...]`` (condition-major rows).
        """
        B = len(batch)
        per = max(1, rows // B)
        if prefix is not None:
            per = max(1, min(per, cache_bytes // max(1, B * bytes_per_row(prefix.cache))))
        dtype = next(self.model.parameters()).dtype
        out = []
        for c0 in range(0, values.shape[0], per):
            chunk = values[c0:c0 + per].to(batch.input_ids.device, dtype)
            got, _ = self.run(batch, [op_for(chunk.repeat_interleave(B, 0))], prefix, times=chunk.shape[0])
            out.append(got.view(chunk.shape[0], B, -1))
            if on_rows is not None:
                on_rows(got.shape[0])
        return torch.cat(out)

    # -- many items ----------------------------------------------------------------------------

    def clean(self, batches: Sequence[Batch], n: int, paths: Sequence[str] = ("fast",),
              ops: dict[str, Sequence[Op]] | None = None, progress: bool = False) -> CleanRun:
        """One clean run per item and path, capturing what conditions will need (``ops`` per path)."""
        scores = {p: np.zeros((n, len(self.scorer.labels)), np.float32) for p in paths}
        caps: dict[str, dict[str, torch.Tensor]] = {p: {} for p in paths}
        lengths = [path_suffix(p) for p in paths]
        for batch in tqdm(batches, desc="clean", unit="batch", disable=not progress, leave=False):
            prefixes = self.prefixes(batch, lengths)
            for path in paths:
                m = path_suffix(path)
                s, got = self.run(batch, (ops or {}).get(path, ()), prefixes[m] if m else None)
                scores[path][batch.indices] = s.numpy()
                for name, value in got.items():
                    if name not in caps[path]:
                        caps[path][name] = torch.zeros((n, *value.shape[1:]), dtype=value.dtype, device=value.device)
                    caps[path][name][torch.as_tensor(batch.indices, device=value.device)] = value
        return CleanRun(scores, caps)

    def conditions(self, batches: Sequence[Batch], n: int, conditions: Sequence[Condition], progress: bool = False,
                   desc: str = "conditions") -> list[np.ndarray]:
        """Label scores ``[n, K]`` of every condition; each batch's prefix (per suffix length) is made once."""
        out = [np.zeros((n, len(self.scorer.labels)), np.float32) for _ in conditions]
        bar = tqdm(total=len(batches) * len(conditions), desc=desc, unit="fwd", disable=not progress, leave=False)
        lengths = sorted({int(c.suffix) for c in conditions})
        for batch in batches:
            prefixes = self.prefixes(batch, lengths)
            for i, cond in enumerate(conditions):
                s, _ = self.run(batch, cond.build(batch), prefixes[int(cond.suffix)] if cond.suffix else None)
                out[i][batch.indices] = s.numpy()
                bar.update(1)
        bar.close()
        return out
