"""Work accounting: forwards, token-layers and wall time per stage, against a plain-forward floor.

A GPU speed claim ("the ablation sweep runs at 40% of a plain bf16 forward") needs two numbers a
CPU can check too: *how much* model work an analysis does, and *how fast* the machine does plain
model work. This module counts the first exactly, from the model itself, so a regression in the
amount of work (a fast path that silently re-runs every layer, a condition that is no longer
batched) shows in a CPU test without a GPU:

``forwards``
    calls of the decoder backbone (the module that owns the layer list): one per batched forward,
    one per generated token when decoding;
``tokens``
    token positions fed to those calls (padding included -- it is computed);
``token_layers``
    token positions times decoder layers actually run, counted at every layer call; a suffix
    forward from a KV prefix counts its few tokens, a forward that starts at a middle layer
    counts only the layers it runs;
``pad_token_layers``
    the part of ``token_layers`` spent on padding (positions the call's attention mask masks
    out). Why count it: a left-padded batch costs its longest row's length in every row, so a
    subset of a few items in one batch pads far more than the full corpus in length-sorted
    batches does; a projection from a subset scales the real work, not the subset's padding;
``ragged_token_layers``
    the token-layers (padding included) of calls whose rows differ in length, i.e. that padded at
    all: the whole-prompt and own-token passes. A suffix step on a clean prefix (every row its
    last ``m`` tokens) never pads, so a projection adds full-scale padding to these calls only.

:func:`plain_forward_rate` measures the machine: token-layers per second of plain batched
forwards over given prompts. A stage's ``floor_s = token_layers / rate`` is the time those
token-layers would take as plain forwards, and ``ratio = floor_s / wall_s`` the share of the
floor the stage achieves (1.0 = as fast as plain forwards; the issue's target is >= 0.4).

Counting uses forward *pre*-hooks that only read shapes, so outputs stay bit-identical.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from emolens.engine.intervention import unwrap
from emolens.inputs.batching import iter_batches

__all__ = ["Work", "WorkCounter", "plain_forward_rate", "stage_row"]


@dataclass
class Work:
    """Model work done (and the wall time it took) over some span of a run."""

    forwards: int = 0
    tokens: int = 0
    token_layers: int = 0
    seconds: float = 0.0
    pad_token_layers: int = 0
    ragged_token_layers: int = 0

    def __sub__(self, other: Work) -> Work:
        return Work(*(a - b for a, b in zip(self._values(), other._values(), strict=True)))

    def __add__(self, other: Work) -> Work:
        return Work(*(a + b for a, b in zip(self._values(), other._values(), strict=True)))

    def _values(self) -> tuple:
        return (self.forwards, self.tokens, self.token_layers, self.seconds, self.pad_token_layers,
                self.ragged_token_layers)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows_tokens(args: tuple, kwargs: dict) -> int:
    """Token positions in a call's hidden states / input ids (batch x sequence)."""
    for value in (*args, kwargs.get("hidden_states"), kwargs.get("input_ids"), kwargs.get("inputs_embeds")):
        if isinstance(value, torch.Tensor) and value.ndim >= 2:
            return int(value.shape[0]) * int(value.shape[1])
    return 0


def _pad_tokens(kwargs: dict, rows: int) -> torch.Tensor | None:
    """Padded positions among a backbone call's ``rows`` new token positions, as a 0-d tensor where
    the mask is (no host sync): the zeros of the last ``T`` columns of its 2-D attention mask (the
    mask spans cached and new columns, the new ones last); ``None`` without one."""
    mask = kwargs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or not rows:
        return None
    new = rows // max(1, int(mask.shape[0]))
    return int(mask.shape[0]) * new - mask[:, -new:].bool().sum() if new <= mask.shape[1] else None


@dataclass
class WorkCounter:
    """Cumulative work of one model, counted by read-only pre-hooks on its backbone and layers.

    The one work counter of the package: the condition runner counts its forwards with it
    (``with counter.counting(lm): ...`` hooks the model for the block only), and a stage or bench
    keeps one attached for a whole run (``WorkCounter.attach(lm)`` ... ``detach()``). ``lm`` is a
    :class:`~emolens.model.loading.LoadedModel` or a plain ``nn.Module`` (sites resolved by
    structure). ``snapshot()`` reads the totals; ``span()`` measures a block's work and wall time.
    Counting at the layers (not from batch shapes) means a forward that skips layers, or runs
    more than it should, is counted as it really ran. Padding is read from each call's attention
    mask where the mask lives and summed there; it reaches ``total`` at :meth:`snapshot`, so the
    hooks never wait for the device (a host sync per forward would stall a GPU's queue of
    one-token condition steps).
    """

    total: Work = field(default_factory=Work)
    _handles: list = field(default_factory=list, repr=False)
    _folds: list = field(default_factory=list, repr=False)
    _pending: dict = field(default_factory=lambda: {"pads": 0, "ragged": 0}, repr=False)

    @classmethod
    def attach(cls, lm) -> WorkCounter:
        counter = cls()
        counter._hook(lm)
        return counter

    @property
    def forwards(self) -> int:
        return self.total.forwards

    @property
    def tokens(self) -> int:
        return self.total.tokens

    @property
    def token_layers(self) -> int:
        return self.total.token_layers

    def _hook(self, lm) -> None:
        model, sites = unwrap(lm)
        layers: Sequence[torch.nn.Module] = sites.layers
        backbone_path = sites.paths.layers.rsplit(".", 1)[0] if "." in sites.paths.layers else ""
        backbone = model.get_submodule(backbone_path) if backbone_path else model
        total, pending = self.total, self._pending
        call = {"rows": 0, "pads": None, "layers": 0}  # the backbone call in progress

        def fold() -> None:
            """Add the call's padding over the layers it has run so far to the pending sums (on its device)."""
            pads, n = call["pads"], call["layers"]
            if pads is not None and n:
                pending["pads"] = pending["pads"] + pads * n
                pending["ragged"] = pending["ragged"] + (pads > 0).long() * (call["rows"] * n)
            call["layers"] = 0

        def on_forward(_module, args, kwargs):
            fold()
            total.forwards += 1
            call["rows"] = _rows_tokens(args, kwargs)
            call["pads"] = _pad_tokens(kwargs, call["rows"])
            total.tokens += call["rows"]

        def on_layer(_module, args, kwargs):
            rows = _rows_tokens(args, kwargs)
            total.token_layers += rows
            call["layers"] += rows == call["rows"]

        self._folds.append(fold)

        self._handles.append(backbone.register_forward_pre_hook(on_forward, with_kwargs=True))
        for layer in layers:
            self._handles.append(layer.register_forward_pre_hook(on_layer, with_kwargs=True))

    @contextmanager
    def counting(self, lm) -> Iterator[WorkCounter]:
        """Count the work ``lm`` does inside the block (hooks installed for the block only)."""
        mark, folds = len(self._handles), len(self._folds)
        self._hook(lm)
        try:
            yield self
        finally:
            while len(self._handles) > mark:
                self._handles.pop().remove()
            self._settle()
            del self._folds[folds:]

    def _settle(self) -> None:
        """Bring the padding summed on the device into ``total`` (one host sync)."""
        for fold in self._folds:
            fold()
        pending = self._pending
        self.total.pad_token_layers += int(pending["pads"])
        self.total.ragged_token_layers += int(pending["ragged"])
        pending["pads"] = pending["ragged"] = 0

    def snapshot(self) -> Work:
        self._settle()
        return Work(self.total.forwards, self.total.tokens, self.total.token_layers, time.perf_counter(),
                    self.total.pad_token_layers, self.total.ragged_token_layers)

    @contextmanager
    def span(self) -> Iterator[Work]:
        """``with counter.span() as work:`` -- ``work`` holds the block's work and wall time after it."""
        out = Work()
        start = self.snapshot()
        try:
            yield out
        finally:
            _sync()
            done = self.snapshot() - start
            for name, value in done.as_dict().items():
                setattr(out, name, value)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._settle()
        self._folds.clear()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.no_grad()
def plain_forward_rate(lm, prompts: Sequence, batch_size: int, repeats: int = 1, warm_up: bool = True
                       ) -> dict[str, float]:
    """Token-layers per second of plain batched forwards (no hooks, no outputs kept) over ``prompts``.

    The first batch is run once untimed (kernel selection, allocator warm-up), unless ``warm_up`` is
    off (a study measures it after a stage has run the model: already warm). Only the last
    position's logits are computed, as every analysis does (``logits_to_keep=1``): the output
    head over every position is no layer work, and on a large vocabulary (gemma's 262k) it cost
    more than the layers (a 16 x 74-token gemma-3-270m batch took 2.4x as long with it). Returns
    the rate and the work measured, so a table can say what the floor was measured on.
    """
    counter = WorkCounter.attach(lm)
    try:
        if warm_up:
            first = next(iter_batches(lm.tokenizer, prompts[:batch_size], batch_size, lm.device))
            lm.model(input_ids=first.input_ids, attention_mask=first.attention_mask, use_cache=False,
                     logits_to_keep=1)
        _sync()
        with counter.span() as work:
            for _ in range(repeats):
                for batch in iter_batches(lm.tokenizer, prompts, batch_size, lm.device):
                    lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False,
                             logits_to_keep=1)
    finally:
        counter.detach()
    rate = work.token_layers / max(work.seconds, 1e-9)
    return {"token_layers_per_s": rate, "seconds": work.seconds, "token_layers": work.token_layers,
            "forwards": work.forwards, "batch_size": batch_size}


def stage_row(stage: str, work: Work, rate: float | None) -> dict[str, Any]:
    """One row of a stage table: the work, the floor it implies at ``rate`` and the achieved ratio."""
    row: dict[str, Any] = {"stage": stage, **work.as_dict()}
    if rate:
        floor = work.token_layers / rate
        row["floor_s"] = floor
        row["ratio"] = floor / work.seconds if work.seconds > 0 else float("nan")
    return row
