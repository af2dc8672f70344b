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
  shorter suffix is built from its longer one, and after :meth:`ConditionRunner.share_prefix` the
  longest from the template's shared tokens, run once per analysis (the batch's own columns only).
* **Stacking.** :meth:`ConditionRunner.run` can repeat a batch ``times`` over (rows
  condition-major, ``row = c * B + i``) so several conditions share one forward: either one op
  holds all their values (:meth:`ConditionRunner.stack`, steering's vectors), or each
  condition's ops are confined to its own rows (``Op.rows``; :meth:`ConditionRunner.conditions`
  stacks up to ``stack_rows`` rows per forward).
* **Starting at the first edited layer.** Layers below the first one a condition edits compute
  the clean run's hidden states, so (with single-token label scoring) a condition's forward
  replays the clean output of that layer's predecessor instead (:mod:`emolens.engine.replay`),
  captured once per batch and path. On the suffix path this runs ``m`` tokens through only the
  layers from the window on.
* **Clean reads.** :meth:`ConditionRunner.read` is the clean pass of readout and extraction
  (label scores, the top-1 token and captures; without a scorer, captures only, stopping after
  the deepest layer the captures need), so every forward of the package runs here. After
  :meth:`ConditionRunner.share_prefix` a read runs only each prompt's own tokens on the cached
  tokens every prompt starts with (the template's instruction and shots: 35 of gemma-3's ~58 real
  tokens on crowd-enVENT; :mod:`emolens.engine.shared_prefix`), where that is exact.
* **No host sync per condition.** Scores stay on the device until a batch's conditions are done.
* **Scoring** goes through the one :class:`~emolens.engine.scoring.LabelScorer`; multi-token
  labels continue each forward's own (edited) cache.
* **Accounting.** Every forward the runner makes is counted by its
  :class:`~emolens.engine.accounting.WorkCounter` (forwards, tokens, token-layers = tokens run x
  decoder layers, read at the layers themselves), so a fast path's saving is measured, not assumed.

The runner takes a loaded model or a plain ``nn.Module`` (sites resolved by structure).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from emolens.engine.accounting import WorkCounter
from emolens.engine.intervention import Intervention, unwrap
from emolens.engine.memory import stack_budget
from emolens.engine.ops import Op
from emolens.engine.prefix import bytes_per_row, extend_prefix, prefix_cache, suffix_inputs, suffix_mask
from emolens.engine.replay import layer_outputs, start_at
from emolens.engine.scoring import LabelHead, LabelScorer
from emolens.engine.shared_prefix import (
    SharedPrefix,
    laid_out_prefix,
    pad_id,
    prompts_prefix,
    run_suffix,
    suffix_batch,
)
from emolens.errors import EmolensError
from emolens.inputs.batching import Batch
from emolens.model.sites import GLOBAL_SITES


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


@dataclass
class Reading:
    """One clean pass (:meth:`ConditionRunner.read`): label scores ``[B, K]`` and top-1 token ids ``[B]``
    (None without a scorer), and the ops' captures."""

    scores: torch.Tensor | None
    top: torch.Tensor | None
    captures: dict[str, torch.Tensor]


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
    """Label log-probabilities of batches under op lists, full or on a cached prefix (see the module doc).

    ``skip`` (default on) lets forwards start at the first edited layer; ``stack_rows`` is how many rows
    (batch copies x batch) :meth:`conditions` and :meth:`stack` may put into one forward (the batch size
    itself or 0: no stacking) and ``stack_cache_bytes`` how much tiled key/value cache; None takes
    :func:`~emolens.engine.memory.stack_budget` for the model's device. ``label_logits`` (single-token
    labels only): suffix steps score the labels from the labels' rows of the output head only, as
    log-probabilities renormalised over the labels -- for analyses that only compare labels (steering),
    which must renormalise every score over the labels (full forwards keep the full head's; the two
    differ by a per-row constant); see :class:`~emolens.engine.scoring.LabelHead`.
    """

    def __init__(self, lm, scorer: LabelScorer | None, prefix_bytes: int = 2 ** 30,
                 counter: WorkCounter | None = None, skip: bool = True, stack_rows: int | None = None,
                 label_logits: bool = False, stack_cache_bytes: int | None = None):
        self.lm = lm
        self.model, self.sites = unwrap(lm)
        #: None only for capture-only reads (:meth:`read`: extraction without a readout)
        self.scorer = scorer
        #: ``label_logits``: scores renormalised over the labels, from the labels' rows of the output head only
        self.heads = LabelHead.of(self.model, scorer) \
            if label_logits and scorer is not None and scorer.single_token else None
        self.prefix_bytes = prefix_bytes
        self.counter = counter if counter is not None else WorkCounter()
        self.skip = skip
        if stack_rows is None or stack_cache_bytes is None:
            rows, cache = stack_budget(next(self.model.parameters()).device)
            stack_rows = rows if stack_rows is None else stack_rows
            stack_cache_bytes = cache if stack_cache_bytes is None else stack_cache_bytes
        self.stack_rows, self.stack_cache_bytes = int(stack_rows), int(stack_cache_bytes)
        self._memo: dict[tuple, Prefix | None] = {}
        self._held = 0
        #: the prompts' common leading tokens, run once (:meth:`share_prefix`); reads run the rest
        self.shared: SharedPrefix | None = None

    @property
    def forwards(self) -> int:
        return self.counter.forwards

    # -- prefixes ------------------------------------------------------------------------------

    @torch.no_grad()
    def prefixes(self, batch: Batch, lengths) -> dict[int, Prefix | None]:
        """Clean caches of every column but the last ``m``, per ``m`` (``None``: that ``m`` runs full forwards).

        After :meth:`share_prefix` the longest is built on the shared tokens' cache
        (:func:`~emolens.engine.shared_prefix.laid_out_prefix`, in the batch's own column layout),
        else from a forward over the batch's columns."""
        key = (tuple(batch.input_ids.shape), *(t.cpu().numpy().tobytes() for t in (
            batch.input_ids, batch.attention_mask, batch.position_ids)))
        out: dict[int, Prefix | None] = {}
        longer: Prefix | None = None
        for m in sorted({int(x) for x in lengths if int(x)}, reverse=True):
            if (key, m) not in self._memo:
                with self.counter.counting(self.lm):
                    if longer is not None:
                        cache = extend_prefix(self.model, batch, longer.cache, longer.m, m)
                    else:  # on the template's shared tokens where they were run once (share_prefix)
                        cache = laid_out_prefix(self.model, batch, self.shared, m) if self.shared else None
                        cache = cache if cache is not None else prefix_cache(self.model, batch, m)
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

    # -- starting layers -----------------------------------------------------------------------

    def start_layer(self, ops: Sequence[Op]) -> int:
        """The first decoder layer ``ops`` edit (0: an op at the embeddings or outside the layers, no ops,
        skipping off, or label scoring that continues the cache)."""
        if not self.skip or not ops or self.scorer.needs_cache:
            return 0
        first = self.sites.n_layers
        for op in ops:
            if op.site in GLOBAL_SITES:
                return 0
            first = min(first, *self.sites.resolve_layers(op.layers, op.site))
        return first

    @torch.no_grad()
    def clean_hidden(self, batch: Batch, prefix: Prefix | None, starts) -> dict[int, torch.Tensor]:
        """The clean outputs of layers ``k - 1`` for each start ``k > 0`` (``{k: [B, m or T, d]}``): one clean
        forward of the suffix on ``prefix`` (or of the whole batch)."""
        starts = sorted({int(k) for k in starts if int(k) > 0})
        if not starts:
            return {}
        with self.counter.counting(self.lm):
            got = layer_outputs(self.model, self.sites, [k - 1 for k in starts],
                                lambda: self._forward(batch, (), prefix, 1, stop=max(starts)))
        return {k: got[k - 1] for k in starts}

    # -- one forward ---------------------------------------------------------------------------

    def _forward(self, batch: Batch, ops: Sequence[Op], prefix: Prefix | None, times: int, start: int = 0,
                 hidden: torch.Tensor | None = None, stop: int | None = None, heads_only: bool = False):
        """One model forward of ``batch`` x ``times`` under ``ops``: ``(output, kwargs, intervention, rows)``."""
        rows = repeat_batch(batch, times)
        if prefix is not None:
            kwargs = suffix_inputs(batch, prefix.cache, prefix.m, times, start if hidden is not None else 0)
            run = Intervention(self.lm, list(ops), batch_mask=suffix_mask(batch, prefix.m, times),
                               spans=rows.span_masks, suffix=True)
        else:
            cache = self.scorer.new_cache(self.model) if self.scorer is not None else None
            kwargs = {**rows.model_inputs(), "cache": cache, "use_cache": cache is not None}
            run = Intervention(self.lm, list(ops), batch_mask=rows.attention_mask, spans=rows.span_masks)
        if hidden is not None and times > 1:
            hidden = hidden.repeat(times, *([1] * (hidden.ndim - 1)))
        out = None
        with start_at(self.model, self.sites, start, hidden), run:
            if stop is not None:  # only hidden states are wanted: stop after layer stop - 1
                with _stop_before(self.sites, stop):
                    self.model(**kwargs, logits_to_keep=1)
            elif heads_only:
                with self.heads.swapped(self.model):
                    out = self.model(**kwargs, logits_to_keep=1)
            else:
                out = self.model(**kwargs, logits_to_keep=1)
        return out, kwargs, run, rows

    @torch.no_grad()
    def run(self, batch: Batch, ops: Sequence[Op] = (), prefix: Prefix | None = None, times: int = 1,
            start: int = 0, hidden: torch.Tensor | None = None, device: bool = False
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``([times * B, K] label log-probs, captures)`` of ``batch`` stacked ``times`` over under ``ops``.

        ``prefix`` selects the suffix path (the ops' positions must lie in its last ``m`` tokens);
        ``None`` runs the whole prompt. ``start > 0`` skips layers ``0..start-1``, replaying
        ``hidden``, the clean output of layer ``start - 1`` for one copy of the batch (see
        :meth:`clean_hidden`). Scores come back on the CPU, or where the model is with ``device``.
        """
        with self.counter.counting(self.lm):
            # the label head on suffix steps, where the output head is most of the work; a full forward's
            # T tokens dwarf it, and keeping the full head there keeps it bit-identical to the naive path
            if self.heads is not None and self.heads.usable is not False and prefix is not None:
                out, kwargs, run, rows = self._forward(batch, ops, prefix, times, start, hidden, heads_only=True)
                scores = self.heads.scores(out.logits[:, -1])
                if self.heads.usable is None:  # first use: the model's own head must agree, else never again
                    scores = self._check_label_head(scores, batch, ops, prefix, times, start, hidden)
            else:
                out, kwargs, run, rows = self._forward(batch, ops, prefix, times, start, hidden)
                scores = self.scorer.score(self.model, rows, out.logits[:, -1], kwargs["cache"]).float()
        return (scores if device else scores.cpu()), run.captures

    def _check_label_head(self, scores: torch.Tensor, batch: Batch, ops: Sequence[Op], prefix: Prefix | None,
                          times: int, start: int, hidden: torch.Tensor | None) -> torch.Tensor:
        """The label head's first scores checked against the same forward with the model's own head
        (once per runner: kept when they agree, else the full head's scores, and the label head is
        dropped for good). Its own method so the GPU bench can count this one-off forward apart."""
        full, _, _, _ = self._forward(batch, ops, prefix, times, start, hidden)
        return scores if self.heads.check(scores, full.logits[:, -1]) else self.heads.renormalised(full.logits[:, -1])

    @torch.no_grad()
    def share_prefix(self, prompts: Sequence, keep: int = 1) -> bool:
        """Run the leading tokens all ``prompts`` share once, so :meth:`read` runs only the rest of each
        and :meth:`prefixes` builds each batch's clean prefix from their cache.

        ``keep``: the tokens each prompt must keep of its own (the deepest position a read's ops
        capture, counted from the end). Only for reads whose ops read positions counted from the end
        (the caller's duty) and single-token label scoring (multi-token labels continue the whole
        prompt's cache). Returns whether a prefix is in use; a batch whose rows do not start with
        it, or that a sliding attention window could not see across, still runs whole
        (:func:`~emolens.engine.shared_prefix.suffix_batch`).
        """
        self.shared = None
        if getattr(self.lm, "tokenizer", None) is None or (self.scorer is not None and not self.scorer.single_token):
            return False
        with self.counter.counting(self.lm):
            self.shared = prompts_prefix(self.lm, prompts, keep)
        return self.shared is not None

    @torch.no_grad()
    def read(self, batch: Batch, ops: Sequence[Op] = ()) -> Reading:
        """The clean pass of readout and extraction: ``batch`` once, whole, under ``ops`` (captures).

        With a scorer it also gives the label scores and the model's own top-1 token at the answer
        position, both on the CPU. Without one (extraction without a readout) it gives captures only,
        and the forward stops after the deepest layer ``ops`` need. After :meth:`share_prefix`, the
        batch runs as its prompts' own tokens on the shared prefix's cache where it can.
        """
        suffix = suffix_batch(batch, self.shared, pad_id(self.lm)) if self.shared is not None else None
        if suffix is not None:
            return self._read_suffix(suffix, ops)
        with self.counter.counting(self.lm):
            if self.scorer is None:
                if not ops:
                    raise EmolensError("a read without a scorer and without ops has nothing to compute",
                                       "pass capture ops, or a scorer")
                stop = Intervention(self.lm, list(ops), batch_mask=batch.attention_mask,
                                    spans=batch.span_masks).stop_layer()
                _, _, run, _ = self._forward(batch, ops, None, 1, stop=self.sites.n_layers if stop is None else stop)
                return Reading(None, None, run.captures)
            out, kwargs, run, rows = self._forward(batch, ops, None, 1)
            last = out.logits[:, -1]
            scores = self.scorer.score(self.model, rows, last, kwargs["cache"]).float()
        return Reading(scores.cpu(), last.argmax(-1).cpu(), run.captures)

    def _read_suffix(self, suffix, ops: Sequence[Op]) -> Reading:
        """:meth:`read` of a batch's suffixes on the shared prefix (positions resolve in the suffix)."""
        with self.counter.counting(self.lm):
            out, run = run_suffix(self.lm, suffix, ops, need_logits=self.scorer is not None)
            if self.scorer is None:
                return Reading(None, None, run.captures)
            last = out.logits[:, -1]
            scores = self.scorer.first_token(last).float()  # share_prefix: single-token labels only
        return Reading(scores.cpu(), last.argmax(-1).cpu(), run.captures)

    @torch.no_grad()
    def stack(self, batch: Batch, values: torch.Tensor, op_for: Callable[[torch.Tensor], Op],
              prefix: Prefix | None = None, rows: int | None = None, cache_bytes: int | None = None,
              on_rows: Callable[[int], None] | None = None, start: int | None = None) -> torch.Tensor:
        """Label scores ``[C, B, K]`` of ``C`` conditions that differ only in one op's value, ``values[c]``.

        Each forward stacks the batch once per condition (up to ``rows`` rows; on a ``prefix``, also no
        more than ``cache_bytes`` of tiled cache; None: the runner's budget), and ``op_for(v)`` builds
        the op for a chunk whose value ``v`` is ``[chunk * B, ...]`` (condition-major rows). Forwards
        start at the op's first layer (``start``: None = found from the op), from the batch's clean
        hidden states.
        """
        B = len(batch)
        per = max(1, (self.stack_rows if rows is None else rows) // B)
        if prefix is not None:
            budget = self.stack_cache_bytes if cache_bytes is None else cache_bytes
            per = max(1, min(per, budget // max(1, B * bytes_per_row(prefix.cache))))
        dtype = next(self.model.parameters()).dtype
        device = batch.input_ids.device
        if start is None:
            start = self.start_layer([op_for(values[:1].to(device, dtype).repeat_interleave(B, 0))])
        hidden = self.clean_hidden(batch, prefix, [start]).get(start) if start else None
        out = []
        for c0 in range(0, values.shape[0], per):
            chunk = values[c0:c0 + per].to(device, dtype)
            got, _ = self.run(batch, [op_for(chunk.repeat_interleave(B, 0))], prefix, times=chunk.shape[0],
                              start=start if hidden is not None else 0, hidden=hidden, device=True)
            out.append(got.view(chunk.shape[0], B, -1))
            if on_rows is not None:
                on_rows(got.shape[0])
        return torch.cat(out).cpu()

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
        """Label scores ``[n, K]`` of every condition; each batch's prefix (per suffix length) is made once.

        Per batch, conditions with the same suffix length and first edited layer are stacked (each
        one's ops confined to its own rows) up to ``stack_rows`` rows a forward, and start at that
        layer from the batch's clean hidden states; scores leave the device once per batch.
        """
        out = [np.zeros((n, len(self.scorer.labels)), np.float32) for _ in conditions]
        bar = tqdm(total=len(batches) * len(conditions), desc=desc, unit="fwd", disable=not progress, leave=False)
        lengths = sorted({int(c.suffix) for c in conditions})
        for batch in batches:
            B = len(batch)
            prefixes = self.prefixes(batch, lengths)
            built = [list(cond.build(batch)) for cond in conditions]
            groups: dict[tuple[int, int], list[int]] = {}
            for i, cond in enumerate(conditions):
                m = int(cond.suffix)
                groups.setdefault((m, self.start_layer(built[i])), []).append(i)
            per = max(1, self.stack_rows // B)
            done: list[tuple[list[int], torch.Tensor]] = []
            for m in sorted({m for m, _ in groups}):
                prefix = prefixes[m] if m else None
                if prefix is not None:
                    per_m = max(1, min(per, self.stack_cache_bytes // max(1, B * bytes_per_row(prefix.cache))))
                else:
                    per_m = per
                hidden = self.clean_hidden(batch, prefix, [k for mm, k in groups if mm == m])
                for (mm, k), members in groups.items():
                    if mm != m:
                        continue
                    for c0 in range(0, len(members), per_m):
                        chunk = members[c0:c0 + per_m]
                        ops = [dataclasses.replace(op, rows=slice(j * B, (j + 1) * B)) if len(chunk) > 1 else op
                               for j, i in enumerate(chunk) for op in built[i]]
                        got, _ = self.run(batch, ops, prefix, times=len(chunk), start=k, hidden=hidden.get(k),
                                          device=True)
                        done.append((chunk, got))
                        bar.update(len(chunk))
            for chunk, got in done:
                got = got.cpu().numpy()
                for j, i in enumerate(chunk):
                    out[i][batch.indices] = got[j * B:(j + 1) * B]
        bar.close()
        return out


class _StopLayer(Exception):
    """Raised before a layer to end a forward whose remaining layers nobody needs."""


class _stop_before:
    """Context: a forward stops just before decoder layer ``layer`` (``>= n_layers``: runs to the end)."""

    def __init__(self, sites, layer: int):
        self.sites, self.layer, self.handle = sites, layer, None

    def __enter__(self):
        if self.layer < self.sites.n_layers:
            # first among the layer's pre-hooks, so a work counter never counts the layer that does not run
            self.handle = self.sites.layers[self.layer].register_forward_pre_hook(self._raise, prepend=True)
        return self

    @staticmethod
    def _raise(_module, _args):
        raise _StopLayer

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.handle is not None:
            self.handle.remove()
        return exc_type is _StopLayer
